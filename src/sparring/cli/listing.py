"""`sparring list`: the registered datasets, models, pretrained weights, attacks and defenses."""

from __future__ import annotations

import argparse

from ..attacks import ATTACKS
from ..data import DATASETS
from ..defenses import DEFENSES
from ..models import MODELS, PRETRAINED

WHAT = ("all", "datasets", "models", "pretrained", "attacks", "defenses")


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="registered datasets, models, pretrained weights, attacks, defenses")
    p.add_argument("what", nargs="?", default="all", choices=WHAT)


def run(args: argparse.Namespace) -> int:
    what = args.what
    if what in ("all", "datasets"):
        print("datasets:")
        for name in DATASETS.names():
            print(f"  {name:14s} {DATASETS.meta(name).get('description', '')}")
    if what in ("all", "models"):
        print("models:")
        for name in MODELS.names():
            print(f"  {name:16s} {MODELS.meta(name).get('description', '')}")
    if what in ("all", "pretrained"):
        print("pretrained:")
        for name in PRETRAINED.names():
            meta = PRETRAINED.meta(name)
            print(f"  {name:26s} {meta.get('arch', '')} on {meta.get('dataset', '')}, "
                  f"published {meta.get('accuracy', '?')}%")
    if what in ("all", "attacks"):
        print(f"attacks:\n  {'name':14s} {'kind':9s} {'norms':15s} {'targeted':9s} paper")
        for name in ATTACKS.names():
            meta = ATTACKS.meta(name)
            norms = "/".join(meta["norms"])
            print(f"  {name:14s} {meta['kind']:9s} {norms:15s} {meta['targeted']:9s} {meta.get('paper', '')}")
    if what in ("all", "defenses"):
        print(f"defenses:\n  {'name':24s} {'kind':11s} {'differentiable':15s} {'random':7s} paper")
        for name in DEFENSES.names():
            spec = DEFENSES.get(name)
            print(f"  {name:24s} {spec.kind:11s} {str(spec.differentiable):15s} {str(spec.random):7s} {spec.paper}")
            if spec.params:
                shown = ", ".join(f"{p.name}={p.default}" if p.default is not None else p.name for p in spec.params)
                print(f"  {'':24s} params: {shown}")
    return 0
