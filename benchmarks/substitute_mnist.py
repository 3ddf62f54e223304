"""Papernot et al.'s black-box attack on the clean MNIST LeNet (arXiv:1602.02697), CPU.

Oracle: lenet5-advertorch-clean answering labels only, through a LabelOracle with a hard
budget. Seed: the first 150 MNIST test images. The substitute is trained by Jacobian-based
dataset augmentation within the budget, then FGSM (Linf eps 0.3) runs on the substitute over
held-out test images 5000..5999; the transfer success is the fraction of those the oracle
misclassifies (paper: 84% on MetaMind after 6,400 queries). Usage:

    python benchmarks/substitute_mnist.py [--budget 6400] [--arch cnn] [--rounds 7] [--augment-step 0.2] \
        [--device cuda]
"""

from __future__ import annotations

import argparse
import time

import torch

from sparring.attacks.fgsm import fgsm
from sparring.attacks.substitute import SUBSTITUTE_TRAINING, train_substitute
from sparring.data import load_dataset
from sparring.models import load_pretrained
from sparring.oracle import LabelOracle
from sparring.threat import Norm, ThreatModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=6400)
    parser.add_argument("--seed-size", type=int, default=150)
    parser.add_argument("--arch", default="cnn")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--augment-step", type=float, default=0.2)
    parser.add_argument("--reservoir", type=int, default=None)
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--sign-flip-every", type=int, default=3)
    parser.add_argument("--augment", default="none", help="training augmentation of the substitute")
    parser.add_argument("--loss", default="logit,margin,ce", help="FGSM losses to report, comma-separated")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(2)
    ds = load_dataset("mnist", train=False)
    ds_x, ds_y = ds.x_test.to(args.device), ds.y_test.to(args.device)
    target = load_pretrained("lenet5-advertorch-clean").to(args.device).eval()
    oracle = LabelOracle(target, budget=args.budget)
    seed_x = ds_x[: args.seed_size]
    x_held, y_held = ds_x[5000:6000], ds_y[5000:6000]
    tick = time.perf_counter()
    settings = SUBSTITUTE_TRAINING.replace(epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
                                           augment=args.augment)
    sub, info = train_substitute(oracle, seed_x, arch=args.arch, rounds=args.rounds,
                                 augment_step=args.augment_step, reservoir=args.reservoir,
                                 sign_flip_every=args.sign_flip_every, settings=settings,
                                 x_eval=x_held, y_eval=y_held, seed=args.seed)
    seconds = time.perf_counter() - tick
    with torch.no_grad():
        clean = (target(x_held).argmax(1) == y_held).float().mean().item()
    print(f"oracle clean accuracy (held-out 5000..5999): {100 * clean:.2f}%")
    print(f"label queries used: {info['queries']} (budget {args.budget}); set size per round: {info['sizes']}")
    print("substitute accuracy per round: " + ", ".join(f"{100 * a:.1f}%" for a in info["accuracy"]))
    print(f"substitute training time: {seconds:.1f}s")
    for loss in args.loss.split(","):
        x_adv = fgsm(sub, x_held, y_held, threat=ThreatModel(Norm.LINF, args.eps), loss=loss)
        with torch.no_grad():
            fooled = (target(x_adv).argmax(1) != y_held).float().mean().item()
            white = (sub(x_adv).argmax(1) != y_held).float().mean().item()
        print(f"FGSM ({loss} loss) eps {args.eps} on the substitute: misclassified by the substitute "
              f"{100 * white:.2f}%, transfer success (misclassified by the oracle) {100 * fooled:.2f}%")

if __name__ == "__main__":
    main()
