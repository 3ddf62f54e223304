"""`sparring fool`: fooling images, noise or a blank image driven to chosen classes (false positives)."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import torch

from ..attacks import fooling_images
from ..data import load_dataset
from ..errors import ConfigError
from ..experiment import check_fits, resolve_device, resolve_model
from ..report import image_grid
from ..util import frozen, write_atomic
from .options import common, model_args


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fool", help="fooling images: noise or blank driven to chosen classes (false positives)")
    model_args(p, dataset_help="gives the image shape and the class names")
    p.add_argument("--classes", default="all", help="target classes: all, or indices such as 0,3,7")
    p.add_argument("--start", default="noise", help="noise, blank or zeros")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--step-size", type=float, default=0.01)
    p.add_argument("--confidence", type=float, default=0.99, help="stop once p(target) reaches this")
    p.add_argument("--out", default=None, help="folder for fooling.pt and fooling.png")
    common(p)


def _classes(text: str, count: int) -> list[int]:
    if text.strip() == "all":
        return list(range(count))
    try:
        out = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--classes expects 'all' or comma-separated class indices, got {text!r}") from None
    bad = [c for c in out if not 0 <= c < count]
    if not out or bad:
        raise ConfigError(f"--classes expects indices in 0..{count - 1}, got {text!r}")
    return out


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    model, _ = resolve_model(args.model, args.weights, weights_dir=args.weights_dir)
    ds = load_dataset(args.dataset, data_dir=args.data_dir, train=False)
    shape, names = tuple(ds.x_test.shape[1:]), list(ds.classes)
    check_fits(model, shape, len(names), ds.name)
    targets = _classes(args.classes, len(names))
    model = model.to(device).eval()
    with frozen(model):
        images = fooling_images(model, targets=targets, shape=shape, start=args.start, steps=args.steps,
                                step_size=args.step_size, confidence=args.confidence,
                                generator=torch.Generator().manual_seed(args.seed))
        with torch.no_grad():
            probs = model(images).softmax(1).cpu()
    target_t = torch.tensor(targets)
    p_target = probs.gather(1, target_t[:, None]).squeeze(1)
    print(f"{ds.name} / {args.model}: fooling images from {args.start} (confidence goal {args.confidence})")
    for cls, p, pred in zip(targets, p_target.tolist(), probs.argmax(1).tolist()):
        print(f"  {names[cls]:>12s}  p(target) {p:.4f}  predicted {names[pred]}")
    reached = int((p_target >= args.confidence).sum())
    print(f"{reached}/{len(targets)} images reached the goal")
    if args.out:
        out = Path(args.out)
        buffer = io.BytesIO()
        torch.save({"images": images.detach().cpu(), "targets": target_t, "probs": probs}, buffer)
        write_atomic(out / "fooling.pt", buffer.getvalue())
        titles = [f"{names[c]} {p:.2f}" for c, p in zip(targets, p_target.tolist())]
        write_atomic(out / "fooling.png", image_grid(images.detach().cpu(), titles))
        print(f"wrote {out / 'fooling.pt'} and {out / 'fooling.png'}")
    return 0
