"""The measured effect of the training speed opt-ins (sparring.precision): fp32, bf16 / fp16 autocast,
channels_last and torch.compile, on the same model, data and steps; prints a Markdown table.

    python benchmarks/training_speed.py --out docs/training-speed.md            # CPU
    python benchmarks/training_speed.py --device cuda --model preact-resnet18   # a GPU machine

Each setting trains `--steps` batches (one epoch of a `--steps * --batch-size` image subset) after one
warm-up epoch (compilation happens there), timed by the training loop's own epoch time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from _doc import device_name, machine, publish, table_doc  # noqa: E402
from sparring.data import load_dataset  # noqa: E402
from sparring.models import build_model  # noqa: E402
from sparring.training import TrainSettings, train  # noqa: E402

# the TrainSettings fields (precision, channels_last, compile) each setting changes
SETTINGS = [("fp32", {}), ("bf16 autocast", {"precision": "bf16"}),
            ("fp16 autocast + scaler", {"precision": "fp16"}),
            ("channels_last", {"channels_last": True}), ("torch.compile", {"compile": True})]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    ds = load_dataset(args.dataset)
    n = args.steps * args.batch_size
    x, y = ds.x_train[:n], ds.y_train[:n]
    rows = []
    base = None
    for label, options in SETTINGS:
        torch.manual_seed(0)
        model = build_model(args.model, num_classes=ds.num_classes, in_channels=ds.input_shape[0], mean=ds.mean,
                            std=ds.std)
        try:
            settings = TrainSettings(epochs=2, batch_size=args.batch_size, optimizer="sgd", lr=0.05,
                                     weight_decay=5e-4, schedule="none", **options)
            history = train(model, x, y, settings, seed=0, device=args.device)
        except Exception as exc:  # e.g. no compiler for torch.compile, fp16 kernels missing on this CPU
            rows.append(f"| {label} | failed: {str(exc).splitlines()[0][:80]} | | |")
            print(rows[-1], flush=True)
            continue
        seconds = history[1]["time_s"]
        base = base or seconds
        rows.append(f"| {label} | {1000 * seconds / args.steps:.0f} | {base / seconds:.2f}x | "
                    f"{history[1]['loss']:.3f} |")
        print(rows[-1], flush=True)
    text = table_doc(
        "Training speed opt-ins",
        f"Command: `python benchmarks/training_speed.py --dataset {args.dataset} --model {args.model} --steps "
        f"{args.steps} --batch-size {args.batch_size} --device {args.device}`; {machine(device_name(args.device))}.",
        f"One epoch of {args.steps} SGD steps on {n} training images after a warm-up epoch (torch.compile compiles "
        "there); milliseconds per step, speed-up over fp32, and the epoch's mean loss (equal settings should "
        "train alike).",
        "| setting | ms per step | vs fp32 | loss |", "|---|---:|---:|---:|", rows)
    publish(text, args.out)


if __name__ == "__main__":
    main()
