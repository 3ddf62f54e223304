"""`sparring defend`: apply a defense chain (training recipes, filters, noise, trained parts) and save the
defended model, resumable."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..data import load_dataset
from ..defenses import Context, apply_defenses, network_and_parts
from ..errors import ConfigError, InputError
from ..experiment import check_fits, defense_chain, fit_parts, join_job, recipe_settings, resolve_model, train_model
from ..models import Normalized, save_model
from ..training import discard, evaluate_accuracy, partial
from .options import common, parse_attack, resume_arg, settings_from, speed_args, train_args


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("defend", help="apply defenses (training recipes, filters, noise) and save the defended model")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--model", default="digits-cnn", help="architecture, or a saved model path to start from")
    p.add_argument("--defense", action="append", default=[],
                   help="NAME[:key=value,...], repeatable, e.g. pgd-at:steps=7")
    p.add_argument("--out", required=True, help="path stem of the saved model, e.g. models/digits-pgd")
    p.add_argument("--eps", default=None, help="budget of an adversarial-training recipe, e.g. 0.3 or 8/255")
    p.add_argument("--norm", default="linf", help="l1, l2 or linf (adversarial training)")
    train_args(p, epochs=10, schedule=None)
    resume_arg(p)
    speed_args(p)
    common(p)


def run(args: argparse.Namespace) -> int:
    if not args.defense:
        raise ConfigError("expected at least one --defense NAME[:key=value,...] (see `sparring list defenses`)")
    chain = defense_chain([(*parse_attack(text), args.eps, args.norm) for text in args.defense])
    if args.epochs < 0 or (chain.recipe and args.epochs == 0):
        raise ConfigError(f"--epochs must be >= {1 if chain.recipe else 0} (0: wrap without training), "
                          f"got {args.epochs}")
    _, dist, device = join_job(args.device)  # under torchrun: DDP training, rank 0 saves
    ds = load_dataset(args.dataset, data_dir=args.data_dir)
    model, info = resolve_model(args.model, dataset=ds, seed=args.seed)
    net, parts = network_and_parts(model)
    if not isinstance(net, Normalized):
        raise InputError(f"expected an architecture name or a model saved by sparring, got {args.model!r}")
    chain = chain.copy(before=info.get("meta", {}).get("defense", []))
    settings = recipe_settings(settings_from(args, "cosine"), chain, args.schedule)
    context = Context(ds, settings, args.seed, device, chain.threat, partial(args.out), args.resume,
                      sys.stderr.isatty())
    history: Any = fit_parts(chain, context, parts)
    model = apply_defenses(net, chain.entries, parts)  # noise layers go into net in place; filters wrap it as .model
    check_fits(model, ds.input_shape, ds.num_classes, ds.name)
    if args.epochs:
        trained = train_model(model, chain, context)
        model = trained.model
        history = {**history, "model": trained.history} if history else trained.history
    model = model.to(device)
    accuracy = evaluate_accuracy(model, ds.x_test, ds.y_test, device=device)
    net, parts = network_and_parts(model)  # saved: the network and trained parts; the meta rebuilds the rest
    if not dist.main:  # under torchrun rank 0 writes
        return 0
    paths = save_model(net, Path(args.out), meta={"dataset": ds.name, "classes": list(ds.classes),
                                                   "defense": list(chain.entries), "base_model": args.model,
                                                   "test_accuracy": accuracy, "history": history or [],
                                                   "seed": args.seed}, parts=parts)
    discard(partial(args.out), weights=True)  # the finished model is at OUT now
    print(f"test accuracy {100 * accuracy:.2f}% -> {paths[0]}")
    return 0
