"""`sparring evaluate`: clean and robust accuracy of one model under attacks, as a table or JSON, and
optionally a run folder."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..config import AttackConfig, Config, EvalConfig
from ..data import load_dataset, load_inputs
from ..errors import ConfigError
from ..evaluate import evaluate
from ..experiment import attack_specs, check_fits, join_job, resolve_model
from ..paths import sha256_file
from ..records import Record
from ..report import write_report
from ..store import RunStore, environment
from ..util import dry_run
from .options import common, eps_list, model_args, parse_attack


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="clean and robust accuracy of one model under attacks")
    model_args(p)
    p.add_argument("--attack", action="append", default=[], help="NAME[:key=value,...], repeatable")
    p.add_argument("--eps", action="append", default=[], help="epsilons, e.g. 8/255 or 0.1,0.2 (repeatable)")
    p.add_argument("--norm", default="linf", help="l1, l2 or linf")
    p.add_argument("--targeted", action="store_true", help="targeted attacks (target picked by --target)")
    p.add_argument("--target", default="random", help="random, least-likely or next")
    p.add_argument("--attack-precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="autocast the attacks (default fp32; reduced precision can understate an attack)")
    p.add_argument("--inputs", default=None, help="your own images instead of the test split: .npz (x, y) or .pt")
    p.add_argument("--n", "--first", dest="n", type=int, default=0,
                   help="first N test images (0 = all); under torchrun write --first (torchrun takes --n as its own)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", default=None, help="also write a run folder with results and report")
    common(p)


def run(args: argparse.Namespace) -> int:
    resolved, dist, device = join_job(args.device)  # under torchrun: one shard of the batches per process
    eps = eps_list(args.eps)
    attacks = []
    for text in args.attack:
        name, params = parse_attack(text)
        label = params.pop("label", "")
        attacks.append(AttackConfig(name, norm=params.pop("norm", args.norm), targeted=args.targeted,
                                    target=args.target, params=params, label=str(label)))
    if attacks and not eps:
        raise ConfigError("--attack needs at least one --eps (e.g. --eps 8/255)")
    specs = attack_specs(tuple(attacks), eps, weights_dir=args.weights_dir)
    model, info = resolve_model(args.model, args.weights, weights_dir=args.weights_dir)
    if args.inputs:
        x_all, y_all = load_inputs(args.inputs)
        name, classes, sha = Path(args.inputs).name, [], sha256_file(args.inputs)
    else:
        ds = load_dataset(args.dataset, data_dir=args.data_dir, train=False)
        x_all, y_all, name, classes, sha = ds.x_test, ds.y_test, ds.name, list(ds.classes), ds.sha256
    shape = tuple(x_all.shape[1:])
    num_classes = len(classes) if classes else int(dry_run(model, torch.zeros(1, *shape), name).shape[-1])
    check_fits(model, shape, num_classes, name)
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
        store.open(config)
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
        write_report(store.root)
    if args.json:
        print(json.dumps(summary))
    else:
        _print_table(summary, records)
    return 0


def _summary(dataset: str, model: str, n: int, records: list[Record]) -> dict[str, Any]:
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


def _print_table(summary: dict[str, Any], records: list[Record]) -> None:
    print(f"{summary['dataset']} / {summary['model']}: n={summary['n']}, "
          f"clean accuracy {100 * summary['clean_accuracy']:.2f}%")
    for r in records:
        robust = 100 * r.get("robust_accuracy", 0)
        cell = f"{r.get('norm', ''):4s} eps={r.get('eps_label', ''):8s} robust {robust:6.2f}%"
        if r["kind"] == "attack":
            l2 = (r["norms"]["l2"] or {}).get("median")
            print(f"  {r['attack']:14s} {cell}  success {100 * (r['attack_success_rate'] or 0):6.2f}%  median L2 "
                  f"{l2 if l2 is None else round(l2, 4)}  {r['time_s']:.2f}s  fwd {r['forward']} bwd {r['backward']}")
        elif r["kind"] == "worst_case" and len(r["attacks"]) > 1:
            print(f"  {'worst case':14s} {cell}")
