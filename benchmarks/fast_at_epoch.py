"""Seconds per epoch of FGSM-RS adversarial training ("fast is better than free", Wong et al. 2020) of
PreAct ResNet-18 on CIFAR-10, under the precision opt-ins; prints a Markdown table.

    python benchmarks/fast_at_epoch.py --device cuda --out docs/fast-at-epoch.md

The paper's setting: batch 128, eps 8/255, step 10/255 from a uniform random start, SGD (momentum 0.9,
weight decay 5e-4) on a one-cycle schedule peaking at lr 0.2, random crop and flip; it reports 15 epochs in
12 minutes (48 s per epoch) on an older GPU with mixed precision. Each setting trains `--epochs` epochs from
the same initial weights; the first includes cuDNN's algorithm search (and compilation), so the last one is
the figure. An epoch includes the recipe's catastrophic-overfitting check (PGD-10 on 256 test images).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from _doc import device_name, machine, publish, table_doc  # noqa: E402
from sparring.data import load_dataset  # noqa: E402
from sparring.defenses import adversarial_training  # noqa: E402
from sparring.models import build_model  # noqa: E402
from sparring.threat import Norm, ThreatModel  # noqa: E402
from sparring.training import TrainSettings  # noqa: E402

# the TrainSettings fields (precision, channels_last, compile) each setting changes
SETTINGS = {"fp32": {}, "bf16": {"precision": "bf16"},
            "bf16+channels_last": {"precision": "bf16", "channels_last": True},
            "fp16": {"precision": "fp16"}, "channels_last": {"channels_last": True}, "compile": {"compile": True}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--model", default="preact-resnet18")
    p.add_argument("--settings", default="fp32,bf16,bf16+channels_last",
                   help=f"comma-separated: {', '.join(SETTINGS)}")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.2)
    p.add_argument("--train-n", type=int, default=0, help="first N training images (0: all)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    settings = args.settings.split(",")
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        raise SystemExit(f"expected settings among {', '.join(SETTINGS)}, got {', '.join(unknown)}")
    ds = load_dataset(args.dataset)
    n = args.train_n or len(ds.y_train)
    x, y = ds.x_train[:n], ds.y_train[:n]
    rows = []
    for label in settings:
        torch.manual_seed(0)
        model = build_model(args.model, num_classes=ds.num_classes, in_channels=ds.input_shape[0], mean=ds.mean,
                            std=ds.std)
        knobs = TrainSettings(epochs=args.epochs, batch_size=args.batch_size, optimizer="sgd", lr=args.lr,
                              momentum=0.9, weight_decay=5e-4, schedule="onecycle", augment="crop-flip",
                              **SETTINGS[label])
        _, history = adversarial_training(model, x, y, method="fgsm-rs", threat=ThreatModel(Norm.LINF, 8 / 255),
                                          settings=knobs, x_val=ds.x_test, y_val=ds.y_test, seed=0,
                                          device=args.device)
        times = " / ".join(f"{h['time_s']:.1f}" for h in history)
        last = history[-1]
        rows.append(f"| {label} | {times} | {last['time_s']:.1f} | {15 * last['time_s'] / 60:.1f} | "
                    f"{last['loss']:.3f} | {100 * last['train_accuracy']:.1f} | "
                    f"{100 * last.get('robust_accuracy', float('nan')):.1f} |")
        print(rows[-1], flush=True)
    text = table_doc(
        "One epoch of FGSM-RS adversarial training",
        f"Command: `python benchmarks/fast_at_epoch.py --dataset {args.dataset} --model {args.model} --settings "
        f"{args.settings} --epochs {args.epochs} --batch-size {args.batch_size} --lr {args.lr} "
        f"--train-n {args.train_n} --device {args.device}`; {machine(device_name(args.device))}.",
        f"FGSM-RS (eps 8/255, step 10/255, random start) on {n} {args.dataset} training images, batch "
        f"{args.batch_size}, SGD on a one-cycle schedule (peak lr {args.lr}), crop and flip. Seconds of each epoch "
        "(the first includes cuDNN's algorithm search), the last epoch's seconds and the 15 epochs of the paper "
        "at that speed in minutes (paper: 12 minutes), and the last epoch's loss, training accuracy on the "
        "adversarial batches and PGD-10 accuracy on 256 test images (the recipe's overfitting check).",
        "| setting | s per epoch | last epoch s | 15 epochs, min | loss | train adv % | PGD-10 check % |",
        "|---|---|---:|---:|---:|---:|---:|", rows)
    publish(text, args.out)


if __name__ == "__main__":
    main()
