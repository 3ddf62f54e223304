"""Papernot et al.'s black-box attack on the clean MNIST LeNet (arXiv:1602.02697), CPU.

Oracle: lenet5-advertorch-clean answering labels only, through a LabelOracle with a hard
budget. Seed: the first 150 MNIST test images. The substitute is trained by Jacobian-based
dataset augmentation within the budget, then FGSM (Linf eps 0.3) runs on the substitute over
held-out test images 5000..5999; the transfer success is the fraction of those the oracle
misclassifies (paper: 84% on MetaMind after 6,400 queries). Usage:

    python benchmarks/substitute_mnist.py [--budget 6400] [--arch cnn] [--rounds 6] [--epochs 10]
"""

from __future__ import annotations

import argparse
import time

import torch

from sparring.attacks.fgsm import fgsm
from sparring.attacks.substitute import train_substitute
from sparring.data import load_dataset
from sparring.models import load_pretrained
from sparring.oracle import LabelOracle
from sparring.threat import Norm, ThreatModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=6400)
    parser.add_argument("--seed-size", type=int, default=150)
    parser.add_argument("--arch", default="cnn")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--augment-step", type=float, default=0.1)
    parser.add_argument("--reservoir", type=int, default=None)
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    ds = load_dataset("mnist", train=False)
    target = load_pretrained("lenet5-advertorch-clean").eval()
    oracle = LabelOracle(target, budget=args.budget)
    seed_x = ds.x_test[: args.seed_size]
    x_held, y_held = ds.x_test[5000:6000], ds.y_test[5000:6000]
    tick = time.perf_counter()
    sub, info = train_substitute(oracle, seed_x, arch=args.arch, rounds=args.rounds, epochs=args.epochs,
                                 augment_step=args.augment_step, reservoir=args.reservoir,
                                 x_eval=x_held, y_eval=y_held, seed=args.seed)
    seconds = time.perf_counter() - tick
    x_adv = fgsm(sub, x_held, y_held, threat=ThreatModel(Norm.LINF, args.eps))
    with torch.no_grad():
        clean = (target(x_held).argmax(1) == y_held).float().mean().item()
        fooled = (target(x_adv).argmax(1) != y_held)
        white = (sub(x_adv).argmax(1) != y_held).float().mean().item()
    print(f"oracle clean accuracy (held-out 5000..5999): {100 * clean:.2f}%")
    print(f"label queries used: {info['queries']} (budget {args.budget}); set size per round: {info['sizes']}")
    print("substitute accuracy per round: " + ", ".join(f"{100 * a:.1f}%" for a in info["accuracy"]))
    print(f"substitute training time: {seconds:.1f}s")
    print(f"FGSM eps {args.eps} on the substitute, misclassified by the substitute: {100 * white:.2f}%")
    print(f"transfer success (misclassified by the oracle): {100 * fooled.float().mean().item():.2f}%")


if __name__ == "__main__":
    main()
