"""The bodies of the CLI subcommands (argparse namespace in, exit code out)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from .cli import _eps_list, _say, parse_attack
from .commands_defense import cmd_audit, cmd_certify, cmd_detect  # noqa: F401  (dispatched by name from cli.main)
from .config import AttackConfig, Config, EvalConfig, dump_toml, load_config
from .errors import ConfigError


def cmd_list(args: argparse.Namespace) -> int:
    from .attacks import ATTACKS
    from .data import DATASETS
    from .models import MODELS, PRETRAINED

    what = args.what
    if what in ("all", "datasets"):
        print("datasets:")
        for name in DATASETS.names():
            print(f"  {name:14s} {DATASETS.meta(name).get('description', '')}")
    if what in ("all", "models"):
        print("models:")
        for name in MODELS.names():
            print(f"  {name:16s} {MODELS.meta(name).get('description', '')}")
    if what in ("all", "pretrained"):
        print("pretrained:")
        for name in PRETRAINED.names():
            meta = PRETRAINED.meta(name)
            print(f"  {name:26s} {meta.get('arch', '')} on {meta.get('dataset', '')}, published {meta.get('accuracy', '?')}%")
    if what in ("all", "attacks"):
        print(f"attacks:\n  {'name':14s} {'kind':9s} {'norms':15s} {'targeted':9s} paper")
        for name in ATTACKS.names():
            meta = ATTACKS.meta(name)
            print(f"  {name:14s} {meta['kind']:9s} {'/'.join(meta['norms']):15s} {meta['targeted']:9s} {meta.get('paper', '')}")
    if what in ("all", "defenses"):
        from .defenses import DEFENSES

        print(f"defenses:\n  {'name':24s} {'kind':11s} {'differentiable':15s} {'random':7s} paper")
        for name in DEFENSES.names():
            meta = DEFENSES.meta(name)
            print(f"  {name:24s} {meta.get('kind', ''):11s} {str(meta.get('differentiable', '')):15s} "
                  f"{str(meta.get('random', '')):7s} {meta.get('paper', '')}")
    return 0


def _speed(args: argparse.Namespace) -> Any:
    from .precision import training_options

    return training_options(precision=args.precision, channels_last=args.channels_last, compile=args.compile)


def cmd_train(args: argparse.Namespace) -> int:
    from .checkpoint import discard, partial
    from .data import load_dataset, require_train
    from .experiment import check_fits, join_job, resolve_model
    from .models import save_model
    from .train import evaluate_accuracy, train

    _, dist, device = join_job(args.device)  # under torchrun: DDP training, rank 0 saves
    ds = load_dataset(args.dataset, data_dir=args.data_dir)
    x_train, y_train = require_train(ds)
    model, _ = resolve_model(args.model, dataset=ds, seed=args.seed)
    check_fits(model, ds.input_shape, ds.num_classes, ds.name)
    with _speed(args):
        history = train(model, x_train, y_train, x_val=ds.x_test, y_val=ds.y_test, epochs=args.epochs,
                        batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr, momentum=args.momentum,
                        weight_decay=args.weight_decay, schedule=args.schedule, augment=args.augment, seed=args.seed,
                        device=device, progress=sys.stderr.isatty(), log=_say, checkpoint=partial(args.out),
                        resume=args.resume)
    accuracy = evaluate_accuracy(model, ds.x_test, ds.y_test, device=device)
    if not dist.main:  # under torchrun rank 0 writes
        return 0
    paths = save_model(model, Path(args.out), meta={"dataset": ds.name, "classes": list(ds.classes),
                                                     "test_accuracy": accuracy, "history": history, "seed": args.seed,
                                                     "processes": dist.world})
    discard(partial(args.out), weights=True)  # the finished model is at OUT now
    print(f"test accuracy {100 * accuracy:.2f}% -> {paths[0]}")
    return 0


def cmd_defend(args: argparse.Namespace) -> int:
    from .checkpoint import discard, partial
    from .data import load_dataset
    from .defenses.build import apply_defenses, network_and_parts
    from .errors import InputError
    from .experiment import check_fits, defense_chain, join_job, resolve_model, train_defended, train_parts
    from .models import Normalized, save_model
    from .train import evaluate_accuracy

    if not args.defense:
        raise ConfigError("expected at least one --defense NAME[:key=value,...] (see `sparring list defenses`)")
    entries = [(*parse_attack(text), args.eps, args.norm) for text in args.defense]
    specs, recipe, threat = defense_chain(entries)
    if args.epochs < 0 or (recipe and args.epochs == 0):
        raise ConfigError(f"--epochs must be >= {1 if recipe else 0} (0: wrap without training), got {args.epochs}")
    _, dist, device = join_job(args.device)  # under torchrun: DDP training, rank 0 saves
    ds = load_dataset(args.dataset, data_dir=args.data_dir)
    model, info = resolve_model(args.model, dataset=ds, seed=args.seed)
    net, parts = network_and_parts(model)
    if not isinstance(net, Normalized):
        raise InputError(f"expected an architecture name or a model saved by sparring, got {args.model!r}")
    chain = list(info.get("meta", {}).get("defense", [])) + [{k: v for k, v in s.items() if k != "kind"} for s in specs]
    history: Any = train_parts(chain, ds, parts, seed=args.seed, device=device, progress=sys.stderr.isatty(), log=_say)
    model = apply_defenses(net, chain, parts)  # noise layers go into net in place; filters wrap it as .model
    check_fits(model, ds.input_shape, ds.num_classes, ds.name)
    if args.epochs:
        with _speed(args):
            model, trained = train_defended(model, ds, recipe, threat, schedule=args.schedule, epochs=args.epochs,
                                            batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                                            momentum=args.momentum, weight_decay=args.weight_decay,
                                            augment=args.augment, seed=args.seed, device=device,
                                            progress=sys.stderr.isatty(), log=_say, checkpoint=partial(args.out),
                                            resume=args.resume)
        history = {**history, "model": trained} if history else trained
    model = model.to(device)
    accuracy = evaluate_accuracy(model, ds.x_test, ds.y_test, device=device)
    net, parts = network_and_parts(model)  # saved: the network and trained parts; the meta rebuilds the rest
    if not dist.main:  # under torchrun rank 0 writes
        return 0
    paths = save_model(net, Path(args.out), meta={"dataset": ds.name, "classes": list(ds.classes), "defense": chain,
                                                   "base_model": args.model, "test_accuracy": accuracy,
                                                   "history": history or [], "seed": args.seed}, parts=parts)
    discard(partial(args.out), weights=True)  # the finished model is at OUT now
    print(f"test accuracy {100 * accuracy:.2f}% -> {paths[0]}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .data import load_dataset, load_inputs
    from .evaluate import evaluate
    from .experiment import attack_specs, check_fits, join_job, resolve_model
    from .paths import sha256_file
    from .store import RunStore, environment

    resolved, dist, device = join_job(args.device)  # under torchrun: one shard of the batches per process
    eps = _eps_list(args.eps)
    attacks = []
    for text in args.attack:
        name, params = parse_attack(text)
        label = params.pop("label", "")
        attacks.append(AttackConfig(name, norm=params.pop("norm", args.norm), targeted=args.targeted,
                                    target=args.target, params=params, label=str(label)))
    if attacks and not eps:
        raise ConfigError("--attack needs at least one --eps (e.g. --eps 8/255)")
    specs = attack_specs(tuple(attacks), eps)
    model, info = resolve_model(args.model, args.weights, weights_dir=args.weights_dir)
    if args.inputs:
        x_all, y_all = load_inputs(args.inputs)
        name, classes, sha = Path(args.inputs).name, [], sha256_file(args.inputs)
    else:
        ds = load_dataset(args.dataset, data_dir=args.data_dir, train=False)
        x_all, y_all, name, classes, sha = ds.x_test, ds.y_test, ds.name, list(ds.classes), ds.sha256
    num_classes = len(classes) if classes else _num_outputs(model, tuple(x_all.shape[1:]))
    check_fits(model, tuple(x_all.shape[1:]), num_classes, name)
    n = args.n or len(y_all)
    if n < 0 or n > len(y_all):
        raise ConfigError(f"--n must be between 1 and {len(y_all)} (0 = all), got {args.n}")
    store = None
    if args.out and dist.main:  # rank 0 writes the folder; every rank reads which cells are done
        store = RunStore(Path(args.out))
        config = Config(name="evaluate", seed=args.seed, device=resolved,
                        evaluate=EvalConfig(eps=eps or EvalConfig().eps, batch_size=args.batch_size),
                        attacks=tuple(attacks))
        config = replace(config, data=replace(config.data, name=name, n=n),
                         model=replace(config.model, arch=args.model, weights=args.weights))
        store.open(dump_toml(config))
        store.write_manifest({**environment(device), "seed": args.seed, "command": sys.argv, "processes": dist.world,
                              "dataset": {"name": name, "sha256": sha, "source": args.inputs or name, "n": n},
                              "model": info, "classes": classes})
    dist.barrier()
    records = evaluate(model, x_all[:n], y_all[:n], specs, seed=args.seed, batch_size=args.batch_size,
                       device=device, context={"model": args.model, "dataset": name},
                       done=RunStore(Path(args.out)).done() if args.out else None,
                       on_record=store.append if store else None,
                       gallery_dir=Path(args.out) / "adversarial" if args.out else None, dist=dist,
                       precision=args.attack_precision)
    if not dist.main:
        return 0
    summary = _summary(name, args.model, n, records)
    if store is not None:
        from .report import write_report

        write_report(store.root)
    if args.json:
        print(json.dumps(summary))
    else:
        _print_table(summary, records)
    return 0


def _num_outputs(model: Any, shape: tuple[int, ...]) -> int:
    import torch

    from .errors import InputError
    from .train import model_device

    try:
        with torch.inference_mode():
            return int(model.eval()(torch.zeros(1, *shape, device=model_device(model))).shape[-1])
    except RuntimeError as exc:
        raise InputError(f"model does not accept images of shape {shape}: {str(exc).splitlines()[0]}") from None


def _summary(dataset: str, model: str, n: int, records: list[dict[str, Any]]) -> dict[str, Any]:
    clean = next(r for r in records if r["kind"] == "clean")
    out: dict[str, Any] = {"dataset": dataset, "model": model, "n": n, "clean_accuracy": clean["accuracy"],
                           "attacks": {}, "worst_case": {}, "cells": []}
    for r in records:
        if r["kind"] == "attack":
            out["attacks"].setdefault(r["attack"], {})[r["eps_label"]] = r["robust_accuracy"]
            out["cells"].append({k: v for k, v in r.items() if k != "robust_bits"})
        elif r["kind"] == "worst_case":
            out["worst_case"].setdefault(r["norm"], {})[r["eps_label"]] = r["robust_accuracy"]
    return out


def _print_table(summary: dict[str, Any], records: list[dict[str, Any]]) -> None:
    print(f"{summary['dataset']} / {summary['model']}: n={summary['n']}, clean accuracy {100 * summary['clean_accuracy']:.2f}%")
    for r in records:
        if r["kind"] == "attack":
            l2 = (r["norms"]["l2"] or {}).get("median")
            print(f"  {r['attack']:14s} {r['norm']:4s} eps={r['eps_label']:8s} robust {100 * r['robust_accuracy']:6.2f}%"
                  f"  success {100 * (r['attack_success_rate'] or 0):6.2f}%  median L2 {l2 if l2 is None else round(l2, 4)}"
                  f"  {r['time_s']:.2f}s  fwd {r['forward']} bwd {r['backward']}")
        elif r["kind"] == "worst_case" and len(r["attacks"]) > 1:
            print(f"  {'worst case':14s} {r['norm']:4s} eps={r['eps_label']:8s} robust {100 * r['robust_accuracy']:6.2f}%")


def _classes(text: str, count: int) -> list[int]:
    if text.strip() == "all":
        return list(range(count))
    try:
        out = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--classes expects 'all' or comma-separated class indices, got {text!r}") from None
    bad = [c for c in out if not 0 <= c < count]
    if not out or bad:
        raise ConfigError(f"--classes expects indices in 0..{count - 1}, got {text!r}")
    return out


def cmd_fool(args: argparse.Namespace) -> int:
    import torch

    from .attacks import fooling_images
    from .data import load_dataset
    from .evaluate import frozen
    from .experiment import check_fits, resolve_device, resolve_model

    device = resolve_device(args.device)
    model, _ = resolve_model(args.model, args.weights, weights_dir=args.weights_dir)
    ds = load_dataset(args.dataset, data_dir=args.data_dir, train=False)
    shape, names = tuple(ds.x_test.shape[1:]), list(ds.classes)
    check_fits(model, shape, len(names), ds.name)
    targets = _classes(args.classes, len(names))
    model = model.to(device).eval()
    with frozen(model):
        images = fooling_images(model, target_classes=targets, shape=shape, start=args.start, steps=args.steps,
                                step_size=args.step_size, confidence=args.confidence,
                                generator=torch.Generator().manual_seed(args.seed))
        with torch.no_grad():
            probs = model(images).softmax(1).cpu()
    target_t = torch.tensor(targets)
    p_target = probs.gather(1, target_t[:, None]).squeeze(1)
    print(f"{ds.name} / {args.model}: fooling images from {args.start} (confidence goal {args.confidence})")
    for cls, p, pred in zip(targets, p_target.tolist(), probs.argmax(1).tolist()):
        print(f"  {names[cls]:>12s}  p(target) {p:.4f}  predicted {names[pred]}")
    reached = int((p_target >= args.confidence).sum())
    print(f"{reached}/{len(targets)} images reached the goal")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        torch.save({"images": images.detach().cpu(), "targets": target_t, "probs": probs}, out / "fooling.pt")
        _image_grid(images.detach().cpu(), [f"{names[c]} {p:.2f}" for c, p in zip(targets, p_target.tolist())],
                    out / "fooling.png")
        print(f"wrote {out / 'fooling.pt'} and {out / 'fooling.png'}")
    return 0


def _image_grid(images: Any, titles: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(len(titles), 10)
    rows = (len(titles) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, title in zip(axes.flat, images, titles):
        pic = img.permute(1, 2, 0).numpy()
        ax.imshow(pic[..., 0] if pic.shape[2] == 1 else pic, cmap="gray" if pic.shape[2] == 1 else None,
                  vmin=0, vmax=1)
        ax.set_title(title, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cmd_run(args: argparse.Namespace) -> int:
    from .experiment import run_experiment

    config: Config = load_config(args.config)
    if args.device:
        config = replace(config, device=args.device)
    if args.data_dir:
        config = replace(config, data=replace(config.data, data_dir=args.data_dir))
    out = Path(args.out) if args.out else Path("runs") / config.name
    run_dir = run_experiment(config, out, progress=sys.stderr.isatty(), log=_say)
    print(f"run folder: {run_dir}  (report: {run_dir / 'report.html'})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    md, html = write_report(Path(args.run_dir))
    print(f"wrote {md} and {html}")
    return 0
