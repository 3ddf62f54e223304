"""sparring "strong" against the original AutoAttack (standard version): robust accuracy and time.

Both run in one process on the same model, images, threads and device; AutoAttack comes from the
PyPI package `pyautoattack` (or a checkout importable as `autoattack`), imported only when needed.
Reports wall time and process CPU time (steadier when other jobs share the CPU), and counts the
samples each one fools that the other does not. Usage:

    python benchmarks/strong_vs_autoattack.py --model lenet5-advertorch-adv --dataset mnist --eps 0.3 --n 1000
    python benchmarks/strong_vs_autoattack.py --model resnet20-akamaster --dataset cifar10 --eps 1/255 --n 200
    python benchmarks/strong_vs_autoattack.py ... --only strong --params queries=2000,target_classes=5
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time

import torch

from sparring.attacks import strong
from sparring.config import parse_eps
from sparring.data import load_dataset, load_inputs
from sparring.evaluate import frozen
from sparring.models import load_pretrained
from sparring.rng import SampleGenerators
from sparring.threat import Norm, ThreatModel


def load_autoattack() -> type | None:
    for module in ("pyautoattack", "autoattack"):
        try:
            return importlib.import_module(module).AutoAttack
        except ImportError:
            continue
    return None


def predict(model: torch.nn.Module, x: torch.Tensor, batch: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])


def run_strong(model, x, y, threat, batch, seed, params) -> torch.Tensor:
    """The whole set in one call, each component in chunks of `batch` over the samples still
    robust: the same scheduling as AutoAttack's run_standard_evaluation."""
    return strong(model, x, y, threat=threat, batch_size=batch, generator=SampleGenerators(seed, range(len(x))),
                  **params)


def run_autoattack(cls, model, x, y, threat, batch, seed) -> torch.Tensor:
    norm = {Norm.LINF: "Linf", Norm.L2: "L2"}[threat.norm]
    attack = cls(model, norm=norm, eps=threat.eps, version="standard", seed=seed, device=x.device)
    result = attack.run_standard_evaluation(x, y, batch_size=batch)
    return result[0] if isinstance(result, tuple) else result


def parse_params(text: str) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in filter(None, text.split(",")):
        key, value = item.split("=", 1)
        out[key] = value.lower() == "true" if value.lower() in ("true", "false") else int(value)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet5-advertorch-adv")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--eps", default="0.3")
    parser.add_argument("--norm", default="linf", choices=["linf", "l2"])
    parser.add_argument("--n", type=int, default=200, help="first n test images")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 is steadier on a shared CPU)")
    parser.add_argument("--only", choices=["strong", "autoattack"], default=None)
    parser.add_argument("--params", default="", help="strong's hyperparameters, e.g. queries=2000,target_classes=5")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--inputs", default=None,
                        help="read the test images from this .npz/.pt (x, y) instead of --dataset's test split")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    label, eps = parse_eps(args.eps)
    threat = ThreatModel(Norm.parse(args.norm), eps)
    if args.inputs:
        x, y = load_inputs(args.inputs)
    else:
        ds = load_dataset(args.dataset, train=False)
        x, y = ds.x_test, ds.y_test
    model = load_pretrained(args.model).to(args.device)
    x, y = x[: args.n].to(args.device), y[: args.n].to(args.device)
    cls = None
    if args.only != "strong":
        cls = load_autoattack()
        if cls is None:
            print("AutoAttack is not installed: pip install --no-deps pyautoattack (into a separate venv, "
                  "with sparring installed there too), or pass --only strong", file=sys.stderr)
            return 2
    rows: dict[str, dict[str, float]] = {}
    fooled: dict[str, torch.Tensor] = {}
    with frozen(model):
        correct = predict(model, x, args.batch) == y
        warm = x[: args.batch].clone().requires_grad_(True)  # first-call costs (cuDNN, allocator) paid by neither
        model(warm).sum().backward()
        runs = [("strong", "sparring strong", lambda: run_strong(model, x, y, threat, args.batch, args.seed,
                                                                 parse_params(args.params))),
                ("autoattack", "AutoAttack standard",
                 lambda: run_autoattack(cls, model, x, y, threat, args.batch, args.seed))]
        for key, name, fn in runs:
            if args.only not in (None, key):
                continue
            tick, cpu = time.perf_counter(), time.process_time()
            x_adv = fn()
            if x_adv.is_cuda:
                torch.cuda.synchronize()
            seconds, cpu = time.perf_counter() - tick, time.process_time() - cpu
            within = threat.distance(x_adv, x) <= eps * (1 + 1e-5) + 1e-6
            robust = correct & ((predict(model, x_adv, args.batch) == y) | ~within)
            fooled[name] = correct & ~robust
            rows[name] = {"robust_accuracy": float(robust.float().mean()), "time_s": seconds, "cpu_s": cpu,
                          "outside_ball": int((~within).sum())}
    print(f"{args.model} on {args.inputs or args.dataset}, first {args.n} test images, {args.norm} eps={label}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.device}")
    print(f"clean accuracy {float(correct.float().mean()) * 100:.2f}%")
    print(f"{'attack':22s} {'robust %':>9s} {'wall s':>9s} {'cpu s':>9s} {'wall ratio':>10s} {'cpu ratio':>10s}")
    base = rows.get("AutoAttack standard")
    for name, row in rows.items():
        ratios = [f"{row[k] / base[k]:.2f}" if base else "-" for k in ("time_s", "cpu_s")]
        print(f"{name:22s} {row['robust_accuracy'] * 100:9.2f} {row['time_s']:9.1f} {row['cpu_s']:9.1f} "
              f"{ratios[0]:>10s} {ratios[1]:>10s}")
    if len(fooled) == 2:
        a, b = fooled["sparring strong"], fooled["AutoAttack standard"]
        print(f"fooled only by strong: {int((a & ~b).sum())}; only by AutoAttack: {int((b & ~a).sum())}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "clean_accuracy": float(correct.float().mean()), "results": rows}, fh,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
