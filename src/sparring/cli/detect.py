"""`sparring detect`: build or train a detector of adversarial inputs (any registered DefenseSpec with a
detector) and measure it: ROC AUC, detection at a false-positive rate, and a joint attack on classifier and
detector together."""

from __future__ import annotations

import argparse
import json
import sys

from ..attacks import ATTACKS
from ..config import parse_eps
from ..data import load_dataset
from ..defenses import DEFENSES, Context, Detector
from ..errors import ConfigError
from ..evaluate.detect import detection_report
from ..experiment import resolve_device
from ..threat import Norm, ThreatModel
from .measured import first, trained
from .options import common, model_args, parse_attack


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("detect", help="train or build a detector of adversarial inputs and measure it (ROC AUC, "
                       "detection at a false-positive rate, and a joint attack on classifier + detector)")
    model_args(p)
    detectors = ", ".join(n for n in DEFENSES.names() if DEFENSES.get(n).detector is not None)
    p.add_argument("--detector", default="binary-detector",
                   help=f"NAME[:key=value,...], one of {detectors} (`sparring list defenses` gives their parameters)")
    p.add_argument("--attack", default="pgd:steps=40",
                   help="NAME[:key=value,...]: the attack detected (and trained on)")
    p.add_argument("--eps", required=True, help="attack budget, e.g. 0.3 or 8/255")
    p.add_argument("--norm", default="linf", help="l1, l2 or linf")
    p.add_argument("--fpr", type=float, default=0.05,
                   help="false-positive rate on clean images that sets the threshold")
    p.add_argument("--no-joint", action="store_true", help="skip the joint attack on classifier + detector")
    p.add_argument("--n", type=int, default=500, help="first N test images")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    common(p)


def run(args: argparse.Namespace) -> int:
    name, params = parse_attack(args.detector)
    spec = DEFENSES.get(name)  # unknown names: "did you mean"
    if spec.detector is None:
        detectors = ", ".join(n for n in DEFENSES.names() if DEFENSES.get(n).detector is not None)
        raise ConfigError(f"expected a detector ({detectors}), got {name!r}, a {spec.kind} defense")
    params = spec.check(params)
    attack, attack_params = parse_attack(args.attack)
    ATTACKS.meta(attack)
    if not 0 < args.fpr < 1:
        raise ConfigError(f"--fpr must be between 0 and 1, got {args.fpr}")
    threat = ThreatModel(Norm.parse(args.norm), parse_eps(args.eps)[1])
    device = resolve_device(args.device)
    ds = load_dataset(args.dataset, data_dir=args.data_dir, train=spec.meta.get("trains", True))
    model, _ = trained(args, ds)
    model = model.to(device).eval()
    context = Context(ds, seed=args.seed, device=device, threat=threat, progress=sys.stderr.isatty(), attack=attack,
                      attack_params=attack_params)
    detector = spec.detector(model, context, params).to(device)
    if not isinstance(detector, Detector):
        raise ConfigError(f"expected the {name} spec to build a sparring.defenses.Detector, "
                          f"got {type(detector).__name__}")
    x, y = first(ds, args.n, device)
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
