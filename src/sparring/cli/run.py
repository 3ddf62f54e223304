"""`sparring run`: the experiment of a config (default: the built-in digits one): train or load, evaluate,
audit, report, in a run folder that resumes after a kill."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from ..config import load_config
from ..experiment import run_experiment


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="the experiment: train or load, evaluate, report")
    p.add_argument("config", nargs="?", default=None, help="TOML config (default: built-in digits)")
    p.add_argument("--out", default=None, help="run folder (default runs/<config name>)")
    p.add_argument("--device", default=None)
    p.add_argument("--data-dir", default=None)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.device:
        config = replace(config, device=args.device)
    if args.data_dir:
        config = replace(config, data=replace(config.data, data_dir=args.data_dir))
    out = Path(args.out) if args.out else Path("runs") / config.name
    run_dir = run_experiment(config, out, progress=sys.stderr.isatty())
    print(f"run folder: {run_dir}  (report: {run_dir / 'report.html'})")
    return 0
