"""Attack time over the floor on the CIFAR ResNet-20 (batch 256, CPU by default).

The floor of an attack is steps x the time of one forward + backward pass w.r.t. the input
with frozen parameters: what any gradient attack must spend. A ratio near 1.0 means the loop
adds almost nothing. The PGD rows run every step on every sample (early_stop=False) to
measure the loop itself; "pgd-40 es" is the default, which drops fooled samples. Usage:

    python benchmarks/attack_floor.py [--batch 256] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from sparring.attacks import fgsm, pgd
from sparring.data import load_dataset
from sparring.evaluate import frozen
from sparring.models import load_pretrained
from sparring.threat import Norm, ThreatModel


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        tick = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - tick)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    ds = load_dataset("cifar10", train=False)
    model = load_pretrained("resnet20-akamaster").to(args.device)
    x, y = ds.x_test[: args.batch].to(args.device), ds.y_test[: args.batch].to(args.device)
    threat = ThreatModel(Norm.LINF, 8 / 255)

    def one_pass() -> None:
        xr = x.clone().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr)

    with frozen(model):
        floor = timed(one_pass, args.repeats * 3)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, batch {args.batch}")
        print(f"floor: one forward+backward w.r.t. the input = {floor * 1000:.1f} ms")
        print(f"{'attack':10s} {'steps':>5s} {'time s':>8s} {'floor s':>8s} {'ratio':>6s} {'robust %':>8s}")
        g = torch.Generator().manual_seed(0)
        for name, steps, fn in [
            ("fgsm", 1, lambda: fgsm(model, x, y, threat=threat)),
            ("pgd-10", 10, lambda: pgd(model, x, y, threat=threat, steps=10, early_stop=False, generator=g)),
            ("pgd-40", 40, lambda: pgd(model, x, y, threat=threat, steps=40, early_stop=False, generator=g)),
            ("pgd-40 es", 40, lambda: pgd(model, x, y, threat=threat, steps=40, generator=g)),
        ]:
            seconds = timed(fn, args.repeats if steps < 40 else 1)
            with torch.no_grad():
                robust = float((model(fn()).argmax(1) == y).float().mean()) * 100
            print(f"{name:10s} {steps:5d} {seconds:8.3f} {steps * floor:8.3f} {seconds / (steps * floor):6.3f} "
                  f"{robust:8.2f}")


if __name__ == "__main__":
    main()
