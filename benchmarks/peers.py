"""sparring against torchattacks, Foolbox 3 and ART on the same model, images and settings.

Every library attacks the same pretrained model wrapped in sparring's CountingModel, so each
row shows wall time, passes actually used, time over the floor (backward passes used x one
forward+backward), robust accuracy and the median L2 / Linf of successful perturbations.
Peers are optional: install them beside torch with --no-deps (see benchmarks/README.md).

    python benchmarks/peers.py --model resnet20-akamaster --dataset cifar10 --batch 256 --small-batch 32
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from peer_adapters import ADAPTERS, SETTINGS
from sparring.data import load_dataset, load_inputs
from sparring.evaluate import Counter, CountingModel, frozen
from sparring.models import load_pretrained


def floor_time(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int = 5) -> float:
    """Fastest of `repeats` timings of one forward+backward w.r.t. the input for this batch."""
    samples = []
    for _ in range(repeats + 1):
        xr = x.clone().requires_grad_(True)
        tick = time.perf_counter()
        torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr)
        samples.append(time.perf_counter() - tick)
    return min(samples[1:])


def measure(run: Callable[[torch.nn.Module], torch.Tensor], model: torch.nn.Module, x: torch.Tensor,
            y: torch.Tensor, floor: float) -> dict[str, float]:
    counter = Counter()
    counted = CountingModel(model, counter).eval()
    tick = time.perf_counter()
    x_adv = run(counted).detach().float()
    seconds = time.perf_counter() - tick
    with torch.no_grad():
        fooled = model(x_adv).argmax(1) != y
    delta = (x_adv - x).flatten(1)
    l2 = delta.norm(dim=1)[fooled]
    linf = delta.abs().amax(dim=1)[fooled]
    passes = counter.backward / len(x)
    return {"time": seconds, "passes": passes, "ratio": seconds / (max(passes, 1) * floor),
            "robust": 100 * float((~fooled).float().mean()),
            "l2": float(l2.median()) if l2.numel() else float("nan"),
            "linf": float(linf.median()) if linf.numel() else float("nan"),
            "max_linf": float(delta.abs().amax()), "forward": counter.forward / len(x)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20-akamaster")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--batch", type=int, default=256, help="batch for FGSM / PGD")
    parser.add_argument("--small-batch", type=int, default=32, help="batch for CW / DeepFool")
    parser.add_argument("--attacks", default=",".join(SETTINGS), help="comma list of " + ", ".join(SETTINGS))
    parser.add_argument("--libraries", default="sparring,torchattacks,foolbox,art")
    parser.add_argument("--repeats", type=int, default=1, help="runs per cell; the fastest is reported")
    parser.add_argument("--device", default="cpu", help="timings are CPU figures; cuda is for the strength columns")
    parser.add_argument("--inputs", default=None, help="read the test images from this .npz/.pt (x, y) instead")
    args = parser.parse_args()
    if args.inputs:
        x_all, y_all = load_inputs(args.inputs)
    else:
        ds = load_dataset(args.dataset, train=False)
        x_all, y_all = ds.x_test, ds.y_test
    x_all, y_all = x_all.to(args.device), y_all.to(args.device)
    # TF32 convolutions (on by default on NVIDIA GPUs) shift logits by ~1e-3: a minimal attack's point,
    # found a hair past the boundary in one batch shape, can flip back when re-checked in another.
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    model = load_pretrained(args.model).to(args.device)
    libraries = args.libraries.split(",")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, model {args.model}, dataset {args.dataset}")
    print(f"{'attack':10s} {'library':13s} {'batch':>5s} {'time s':>8s} {'passes':>7s} {'x floor':>7s} "
          f"{'robust %':>8s} {'med L2':>8s} {'med Linf':>8s}")
    with frozen(model):
        for name in args.attacks.split(","):
            setting = SETTINGS[name]
            n = args.small_batch if setting["small"] else args.batch
            x, y = x_all[:n], y_all[:n]
            floor = floor_time(model, x, y, repeats=max(5, 3 * args.repeats))
            for lib in libraries:
                adapter = ADAPTERS.get(lib, {}).get(name)
                if adapter is None:
                    continue
                try:
                    run = adapter(setting, x, y, int(model(x[:1]).shape[1]))
                except ImportError as exc:
                    print(f"{name:10s} {lib:13s} not installed ({exc.name})")
                    continue
                r = min((measure(run, model, x, y, floor) for _ in range(max(args.repeats, 1))),
                        key=lambda m: m["time"])
                print(f"{name:10s} {lib:13s} {n:5d} {r['time']:8.2f} {r['passes']:7.1f} {r['ratio']:7.2f} "
                      f"{r['robust']:8.2f} {r['l2']:8.4f} {r['linf']:8.4f}", flush=True)


if __name__ == "__main__":
    main()
