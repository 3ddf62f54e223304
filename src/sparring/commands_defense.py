"""`sparring detect` and `sparring certify`: defenses that are measured rather than deployed in front of a model."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .cli import _say, parse_attack
from .config import parse_eps
from .errors import ConfigError


def _trained(args: argparse.Namespace, ds: Any) -> tuple[Any, dict[str, Any]]:
    from .experiment import check_fits, resolve_model

    model, info = resolve_model(args.model, args.weights, weights_dir=args.weights_dir)
    if info.get("weights") is None:
        raise ConfigError(f"expected a trained model (a saved model, a pretrained alias, or --weights), got the "
                          f"bare architecture {args.model!r}")
    check_fits(model, ds.input_shape, ds.num_classes, ds.name)
    return model, info


def _first(ds: Any, n: int, device: str) -> tuple[Any, Any]:
    if n < 1 or n > len(ds.y_test):
        raise ConfigError(f"--n must be between 1 and {len(ds.y_test)}, got {n}")
    return ds.x_test[:n].to(device), ds.y_test[:n].to(device)


def _detector(name: str, params: dict[str, Any], model: Any, ds: Any, threat: Any, attack: str,
              attack_params: dict[str, Any], *, seed: int, device: str) -> Any:
    """The detector `name` built (feature squeezing) or trained on ds's training split."""
    from .data import require_train
    from .defenses import FeatureSqueezing, ReconstructionDetector, train_autoencoder, train_detector

    accepted = {"binary-detector": ("layer", "hidden", "epochs", "train", "lr"),
                "feature-squeezing": ("bits", "window"),
                "reconstruction-detector": ("epochs", "noise", "width", "p", "train")}[name]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(f"detector {name!r} does not take {', '.join(unknown)} (accepted: {', '.join(accepted)})")
    if name == "feature-squeezing":
        return FeatureSqueezing(model, **params).to(device)
    x_train, y_train = require_train(ds)
    count = int(params.pop("train", 5000))
    if count < 2:
        raise ConfigError(f"detector parameter train must be >= 2 training images, got {count}")
    x_train, y_train = x_train[:count].to(device), y_train[:count].to(device)
    if name == "reconstruction-detector":
        p = params.pop("p", 1)
        ae, _ = train_autoencoder(x_train, seed=seed, device=device, log=_say, **params)
        return ReconstructionDetector(ae, p=p).to(device)
    _say(f"training the binary detector on {count} clean {ds.name} images and their {attack} examples")
    return train_detector(model, x_train, y_train, threat=threat, attack=attack, attack_params=attack_params,
                          seed=seed, device=device, log=_say, **params).to(device)


def cmd_detect(args: argparse.Namespace) -> int:
    from .attacks import ATTACKS
    from .data import load_dataset
    from .defenses import DEFENSES
    from .evaluate.detect import detection_report
    from .experiment import resolve_device
    from .threat import Norm, ThreatModel

    name, params = parse_attack(args.detector)
    kind = DEFENSES.meta(name).get("kind")  # unknown names: "did you mean"
    if kind != "detector":
        raise ConfigError(f"expected a detector (binary-detector, feature-squeezing, reconstruction-detector), "
                          f"got {name!r}, a {kind} defense")
    attack, attack_params = parse_attack(args.attack)
    ATTACKS.meta(attack)
    if not 0 < args.fpr < 1:
        raise ConfigError(f"--fpr must be between 0 and 1, got {args.fpr}")
    threat = ThreatModel(Norm.parse(args.norm), parse_eps(args.eps)[1])
    device = resolve_device(args.device)
    ds = load_dataset(args.dataset, data_dir=args.data_dir, train=name != "feature-squeezing")
    model, _ = _trained(args, ds)
    model = model.to(device).eval()
    detector = _detector(name, params, model, ds, threat, attack, attack_params, seed=args.seed, device=device)
    x, y = _first(ds, args.n, device)
    report = detection_report(model, detector, x, y, threat=threat, attack=attack, attack_params=attack_params,
                              fpr=args.fpr, joint=not args.no_joint, seed=args.seed, batch_size=args.batch_size)
    report.update(dataset=ds.name, model=args.model, detector=args.detector, attack=args.attack, eps=args.eps,
                  norm=threat.norm.value)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{name} on {args.model}, {report['n']} {ds.name} test images (clean accuracy "
          f"{100 * report['clean_accuracy']:.1f}%), {args.attack} at {threat.norm.value} {args.eps}, threshold at "
          f"{100 * args.fpr:g}% false positives")
    print(f"{'examples':40s} {'accuracy %':>10s} {'ROC AUC':>8s} {'detected %':>10s} {'evaded %':>9s}")
    for r in report["rows"]:
        print(f"{r['examples']:40s} {100 * r['accuracy']:10.1f} {r['auc']:8.3f} {100 * r['detected']:10.1f} "
              f"{100 * r['evaded']:9.1f}")
    return 0


def cmd_certify(args: argparse.Namespace) -> int:
    from .data import load_dataset
    from .evaluate.certify import certify_report
    from .experiment import resolve_device

    try:
        radii = [float(r) for r in args.radii.split(",") if r.strip()]
    except ValueError:
        raise ConfigError(f"--radii: expected comma-separated numbers, got {args.radii!r}") from None
    if not radii or min(radii) < 0:
        raise ConfigError(f"--radii: expected radii >= 0, got {args.radii!r}")
    device = resolve_device(args.device)
    ds = load_dataset(args.dataset, data_dir=args.data_dir, train=False)
    model, info = _trained(args, ds)
    trained_sigma = next((d.get("params", {}).get("sigma") for d in info.get("meta", {}).get("defense", [])
                          if d.get("name") == "randomized-smoothing"), None)
    sigma = args.sigma if args.sigma is not None else trained_sigma
    if sigma is None:
        raise ConfigError("--sigma is needed: the model was not trained by `defend --defense randomized-smoothing`")
    if trained_sigma is not None and abs(float(sigma) - float(trained_sigma)) > 1e-12:
        _say(f"note: certifying at sigma {sigma} a model trained at sigma {trained_sigma}")
    x, y = _first(ds, args.n, device)
    report = certify_report(model.to(device), x, y, sigma=sigma, num_classes=ds.num_classes, radii=radii,
                            n0=args.n0, n=args.samples, alpha=args.alpha, batch_size=args.batch_size, seed=args.seed)
    report.update(dataset=ds.name, model=args.model)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"randomized smoothing of {args.model}, sigma {sigma:g}, {len(y)} {ds.name} test images, n0 {args.n0}, "
          f"n {args.samples}, alpha {args.alpha:g}: {report['seconds_per_image']:.3f} s per image")
    print(f"{'L2 radius':>10s} {'certified accuracy %':>21s}")
    for r, acc in report["certified"].items():
        print(f"{r:>10s} {100 * acc:21.1f}")
    print(f"abstained {100 * report['abstained']:.1f}%; the largest radius {args.samples} draws can certify is "
          f"{report['max_radius']:.3f}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from .cli import _eps_list
    from .data import load_dataset
    from .defenses.build import apply_defenses, check_defense, network_and_parts
    from .evaluate.audit import audit
    from .evaluate.planted import planted
    from .experiment import resolve_device, resolve_model
    from .threat import Norm, ThreatModel

    eps = [parse_eps(e)[1] for e in _eps_list([args.eps])]
    if not eps or min(eps) <= 0:
        raise ConfigError(f"--eps: expected epsilons > 0, got {args.eps!r}")
    specs = [check_defense(*parse_attack(text)) for text in args.defense]
    trains = [s["name"] for s in specs if s["kind"] not in ("preprocess", "noise") or s["name"] == "autoencoder"]
    if trains:
        raise ConfigError(f"--defense takes filters and noise layers here; {', '.join(trains)} must be trained "
                          "first (sparring defend), then audited as a saved model")
    for flag, value in (("--steps", args.steps), ("--square-queries", args.square_queries), ("--n", args.n)):
        if value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    device = resolve_device(args.device)
    ds = load_dataset(args.dataset, data_dir=args.data_dir, train=False)
    model, _ = _trained(args, ds)
    if specs:
        net, parts = network_and_parts(model)
        model = apply_defenses(net, [{"name": s["name"], "params": s["params"]} for s in specs], parts)
    if args.planted:
        model = planted(args.planted, model)
    surrogate = None
    if args.surrogate:
        surrogate = resolve_model(args.surrogate, weights_dir=args.weights_dir)[0].to(device)
    x, y = _first(ds, args.n, device)
    threat = ThreatModel(Norm.parse(args.norm), max(eps))
    adaptive = {"auto": None, "always": True, "never": False}[args.adaptive]
    report = audit(model.to(device), x, y, threat=threat, eps=eps, steps=args.steps, restarts=args.restarts,
                   square_queries=args.square_queries, surrogate=surrogate, adaptive=adaptive, seed=args.seed,
                   batch_size=args.batch_size)
    report.update(dataset=ds.name, model=args.model, planted=args.planted, defense=args.defense, norm=threat.norm.value,
                  n=len(y))
    if args.json:
        print(json.dumps({**report, "naive": {f"{e:g}": v for e, v in report["naive"].items()},
                          "adaptive": None if report["adaptive"] is None
                          else {f"{e:g}": v for e, v in report["adaptive"].items()}}))
        return 1 if report["verdict"] == "fail" else 0
    what = args.model + (f" + {args.planted} (planted)" if args.planted else "") + "".join(f" + {d}" for d in args.defense)
    print(f"audit of {what} on {len(y)} {ds.name} test images, {threat.norm.value}: {report['verdict'].upper()}")
    for c in report["checks"]:
        why = f" -- {c['cause']}; fix: {c['fix']}" if c["status"] == "fail" and c["cause"] else ""
        print(f"  {c['status']:4s}  {c['name']:38s} {c['evidence']}{why}")
    print(f"{'eps':>8s} {'naive robust %':>15s} {'adaptive robust %':>18s}")
    for e in report["eps"]:
        adapt = "" if report["adaptive"] is None else f"{100 * report['adaptive'][e]:18.1f}"
        print(f"{e:8.4g} {100 * report['naive'][e]:15.1f} {adapt}")
    if report["changes"]:
        print("adaptive re-run: " + "; ".join(report["changes"]))
    return 1 if report["verdict"] == "fail" else 0
