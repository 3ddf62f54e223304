"""`sparring certify`: certified L2 accuracy of randomized smoothing (Cohen et al. 2019)."""

from __future__ import annotations

import argparse
import json
import logging

from ..data import load_dataset
from ..errors import ConfigError
from ..evaluate.certify import certify_report
from ..experiment import resolve_device
from .measured import first, trained
from .options import common, model_args

log = logging.getLogger("sparring.cli")


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("certify", help="certified L2 accuracy of randomized smoothing (Cohen et al. 2019)")
    model_args(p, "the base classifier: architecture, pretrained alias, or saved "
                  "model (one from `defend --defense randomized-smoothing` brings its sigma)")
    p.add_argument("--sigma", type=float, default=None, help="noise std (default: the model's training sigma)")
    p.add_argument("--radii", default="0,0.25,0.5,0.75,1", help="L2 radii, comma-separated")
    p.add_argument("--n0", type=int, default=100, help="noisy draws that pick the class")
    p.add_argument("--samples", type=int, default=10_000, help="noisy draws that bound its probability (n)")
    p.add_argument("--alpha", type=float, default=0.001, help="failure probability of a certificate")
    p.add_argument("--n", type=int, default=200, help="first N test images")
    p.add_argument("--batch-size", type=int, default=1000, help="noisy images per forward pass")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    common(p)


def run(args: argparse.Namespace) -> int:
    try:
        radii = [float(r) for r in args.radii.split(",") if r.strip()]
    except ValueError:
        raise ConfigError(f"--radii: expected comma-separated numbers, got {args.radii!r}") from None
    if not radii or min(radii) < 0:
        raise ConfigError(f"--radii: expected radii >= 0, got {args.radii!r}")
    device = resolve_device(args.device)
    ds = load_dataset(args.dataset, data_dir=args.data_dir, train=False)
    model, info = trained(args, ds)
    trained_sigma = next((d.get("params", {}).get("sigma") for d in info.get("meta", {}).get("defense", [])
                          if d.get("name") == "randomized-smoothing"), None)
    sigma = args.sigma if args.sigma is not None else trained_sigma
    if sigma is None:
        raise ConfigError("--sigma is needed: the model was not trained by `defend --defense randomized-smoothing`")
    if trained_sigma is not None and abs(float(sigma) - float(trained_sigma)) > 1e-12:
        log.info(f"note: certifying at sigma {sigma} a model trained at sigma {trained_sigma}")
    x, y = first(ds, args.n, device)
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
