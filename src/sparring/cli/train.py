"""`sparring train`: train a model on a dataset and save it (safetensors + json), resumable."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..data import load_dataset, require_train
from ..experiment import check_fits, join_job, resolve_model
from ..models import save_model
from ..training import discard, evaluate_accuracy, partial, train
from .options import common, resume_arg, settings_from, speed_args, train_args


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model on a dataset and save it (safetensors + json)")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--model", default="digits-cnn")
    p.add_argument("--out", required=True, help="path stem of the saved model, e.g. models/digits")
    train_args(p, epochs=30, schedule="cosine")
    resume_arg(p)
    speed_args(p)
    common(p)


def run(args: argparse.Namespace) -> int:
    _, dist, device = join_job(args.device)  # under torchrun: DDP training, rank 0 saves
    ds = load_dataset(args.dataset, data_dir=args.data_dir)
    x_train, y_train = require_train(ds)
    model, _ = resolve_model(args.model, dataset=ds, seed=args.seed)
    check_fits(model, ds.input_shape, ds.num_classes, ds.name)
    history = train(model, x_train, y_train, settings_from(args, args.schedule), seed=args.seed, device=device,
                    x_val=ds.x_test, y_val=ds.y_test, checkpoint=partial(args.out), resume=args.resume,
                    progress=sys.stderr.isatty())
    accuracy = evaluate_accuracy(model, ds.x_test, ds.y_test, device=device)
    if not dist.main:  # under torchrun rank 0 writes
        return 0
    paths = save_model(model, Path(args.out), meta={"dataset": ds.name, "classes": list(ds.classes),
                                                     "test_accuracy": accuracy, "history": history, "seed": args.seed,
                                                     "processes": dist.world})
    discard(partial(args.out), weights=True)  # the finished model is at OUT now
    print(f"test accuracy {100 * accuracy:.2f}% -> {paths[0]}")
    return 0
