"""`sparring audit`: check an evaluation for gradient masking, and re-run it adaptively (BPDA, EOT, margin
loss, restarts) when a check fails."""

from __future__ import annotations

import argparse
import json

from ..config import parse_eps
from ..data import load_dataset
from ..defenses import apply_defenses, check_defense, network_and_parts
from ..errors import ConfigError
from ..evaluate.audit import audit
from ..evaluate.planted import PLANTED, planted
from ..experiment import resolve_device, resolve_model
from ..threat import Norm, ThreatModel
from .measured import first, trained
from .options import common, eps_list, model_args, parse_attack


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="check an evaluation for gradient masking; re-run adaptively (BPDA, EOT, "
                       "margin loss, restarts) when a check fails")
    model_args(p)
    p.add_argument("--defense", action="append", default=[], help="a module defense put on the model first, "
                   "e.g. median-blur:window=3 or gaussian-noise:sigma=0.1 (repeatable)")
    p.add_argument("--planted", default=None, help="wrap the model in a deliberately broken defense: "
                   f"{', '.join(PLANTED.names())} (to see the audit catch it)")
    p.add_argument("--eps", required=True, help="epsilons, e.g. 0.05,0.1 (the largest is the main one)")
    p.add_argument("--norm", default="linf", help="l1, l2 or linf")
    p.add_argument("--n", type=int, default=200, help="first N test images")
    p.add_argument("--steps", type=int, default=20, help="PGD steps of the naive attack (adaptive: twice)")
    p.add_argument("--restarts", type=int, default=1, help="PGD restarts of the naive attack (convergence: twice)")
    p.add_argument("--square-queries", type=int, default=500)
    p.add_argument("--surrogate", default=None, help="a model to transfer from (trained: saved model or alias)")
    p.add_argument("--adaptive", default="auto", choices=["auto", "always", "never"])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    common(p)


def run(args: argparse.Namespace) -> int:
    eps = [parse_eps(e)[1] for e in eps_list([args.eps])]
    if not eps or min(eps) <= 0:
        raise ConfigError(f"--eps: expected epsilons > 0, got {args.eps!r}")
    checked = [check_defense(*parse_attack(text)) for text in args.defense]
    trains = [spec.name for spec, _ in checked if spec.train or spec.fit or not (spec.front or spec.inside)]
    if trains:
        raise ConfigError(f"--defense takes filters and noise layers here; {', '.join(trains)} must be trained "
                          "first (sparring defend), then audited as a saved model")
    for flag, value in (("--steps", args.steps), ("--square-queries", args.square_queries), ("--n", args.n)):
        if value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    device = resolve_device(args.device)
    ds = load_dataset(args.dataset, data_dir=args.data_dir, train=False)
    model, _ = trained(args, ds)
    if checked:
        net, parts = network_and_parts(model)
        model = apply_defenses(net, [{"name": spec.name, "params": params} for spec, params in checked], parts)
    if args.planted:
        model = planted(args.planted, model)
    surrogate = None
    if args.surrogate:
        surrogate = resolve_model(args.surrogate, weights_dir=args.weights_dir)[0].to(device)
    x, y = first(ds, args.n, device)
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
    what = args.model + (f" + {args.planted} (planted)" if args.planted else "")
    what += "".join(f" + {d}" for d in args.defense)
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
