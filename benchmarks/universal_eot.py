"""Universal perturbation and EOT-PGD on the clean MNIST LeNet or another model (--model, --dataset).

1. Universal (Moosavi-Dezfooli et al. 2017, arXiv:1610.08401): one Linf delta fitted on MNIST
   test images 0..999, evaluated on held-out test images 5000..5999. Fooling rate as in the
   paper: the fraction whose prediction changes (also: error rate on the true labels).
2. EOT (Athalye et al. 2018, arXiv:1707.07397): plain PGD vs EOT-PGD at the same eps and
   steps, each evaluated under fresh print-and-photo transformations (the "physical" preset:
   rotation +-15 deg, scale 0.9-1.1, shift +-10%, brightness +-0.1, contrast 0.8-1.2, blur
   sigma 0-1, noise 0.03) drawn from a generator the attacks never saw. Usage:

    python benchmarks/universal_eot.py [--part all|universal|eot] [--n-eot 200] [--samples 10]
    python benchmarks/universal_eot.py --part universal --model resnet20-akamaster --dataset cifar10 \
        --eps-universal 8/255,10/255
"""

from __future__ import annotations

import argparse
import time

import torch

from sparring.attacks import PRESETS, Transform, eot_pgd, evaluate_under_transforms, pgd, universal_perturbation
from sparring.config import parse_eps
from sparring.data import load_dataset, load_inputs
from sparring.models import load_pretrained
from sparring.threat import Norm, ThreatModel


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def run_universal(model, x_test, y_test, args) -> None:
    x_fit, y_fit = x_test[:1000], y_test[:1000]
    x_held, y_held = x_test[5000:6000], y_test[5000:6000]
    with torch.no_grad():
        clean = model(x_held).argmax(1)
    print(f"[universal] clean error on held-out 5000..5999: {100 * float((clean != y_held).float().mean()):.2f}%")
    for eps in (parse_eps(e)[1] for e in args.eps_universal.split(",")):
        threat = ThreatModel(Norm.LINF, eps)
        tick = time.perf_counter()
        delta = universal_perturbation(model, x_fit, y_fit, threat=threat, steps=args.passes, loss=args.loss,
                                       cap=None if args.cap is None else args.cap, generator=gen(args.seed))
        seconds = time.perf_counter() - tick
        with torch.no_grad():
            adv = model(threat.clamp(x_held + delta)).argmax(1)
            fit = float((model(threat.clamp(x_fit + delta)).argmax(1) != y_fit).float().mean())
        reference = pgd(model, x_held, y_held, threat=threat, steps=40, generator=gen(args.seed))
        with torch.no_grad():
            per_sample = float((model(reference).argmax(1) != y_held).float().mean())
        changed, wrong = float((adv != clean).float().mean()), float((adv != y_held).float().mean())
        print(f"[universal] Linf {eps}: fooling rate (prediction changed) {100 * changed:.2f}%, "
              f"error {100 * wrong:.2f}% held-out; error {100 * fit:.2f}% on the fitting "
              f"images 0..999 ({args.passes} passes, {seconds:.0f}s); per-sample PGD-40 reference error "
              f"{100 * per_sample:.2f}%")


def run_eot(model, x_test, y_test, args) -> None:
    threat = ThreatModel(Norm.LINF, args.eps_eot)
    x, y = x_test[5000:5000 + args.n_eot], y_test[5000:5000 + args.n_eot]
    transform = Transform(**PRESETS["physical"])
    rates = {}
    base = evaluate_under_transforms(model, x, y, transform, draws=args.draws, generator=gen(10_000 + args.seed))
    for name in ("pgd", "eot-pgd"):
        tick = time.perf_counter()
        if name == "pgd":
            x_adv = pgd(model, x, y, threat=threat, steps=args.steps, loss=args.eot_loss, generator=gen(args.seed))
        else:
            x_adv = eot_pgd(model, x, y, threat=threat, transform=transform, draws=args.samples, steps=args.steps,
                            loss=args.eot_loss, generator=gen(args.seed))
        seconds = time.perf_counter() - tick
        with torch.no_grad():
            white = float((model(x_adv).argmax(1) != y).float().mean())
        rates[name] = evaluate_under_transforms(model, x_adv, y, transform, draws=args.draws,
                                                generator=gen(10_000 + args.seed))
        print(f"[eot] {name:8s} Linf {args.eps_eot}, {args.steps} steps: success without transformation "
              f"{100 * white:.2f}%, under {args.draws} fresh transformations each {100 * rates[name]:.2f}% "
              f"({seconds:.0f}s)")
    print(f"[eot] clean images under the same transformations: error {100 * base:.2f}% (the floor of both rates)")
    ratio = rates["eot-pgd"] / max(rates["pgd"], 1e-12)
    excess = (rates["eot-pgd"] - base) / max(rates["pgd"] - base, 1e-12)
    print(f"[eot] EOT / plain: {ratio:.2f}x raw, {excess:.2f}x above the clean floor "
          f"({args.n_eot} test images 5000..{5000 + args.n_eot - 1}, {args.samples} samples per step)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("all", "universal", "eot"), default="all")
    parser.add_argument("--eps-universal", default="0.1,0.2,0.3", help="comma-separated Linf radii")
    parser.add_argument("--passes", type=int, default=10)
    parser.add_argument("--loss", default="margin")
    parser.add_argument("--cap", type=float, default=None)
    parser.add_argument("--eps-eot", type=float, default=0.3)
    parser.add_argument("--n-eot", type=int, default=200)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--samples", type=int, default=10, help="EOT-PGD's transformations per step (its draws)")
    parser.add_argument("--draws", type=int, default=10, help="fresh transformations per image in the evaluation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eot-loss", default="ce", help="loss of both PGD and EOT-PGD")
    parser.add_argument("--model", default="lenet5-advertorch-clean")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--inputs", default=None, help="a .npz/.pt (x, y) holding the whole test split instead")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.inputs:
        x_test, y_test = load_inputs(args.inputs)
    else:
        ds = load_dataset(args.dataset, train=False)
        x_test, y_test = ds.x_test, ds.y_test
    x_test, y_test = x_test.to(args.device), y_test.to(args.device)
    model = load_pretrained(args.model).to(args.device).eval()
    print(f"{args.model} on {args.inputs or args.dataset}, {args.device}")
    if args.part in ("all", "universal"):
        run_universal(model, x_test, y_test, args)
    if args.part in ("all", "eot"):
        run_eot(model, x_test, y_test, args)


if __name__ == "__main__":
    main()
