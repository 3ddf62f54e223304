"""`sparring report`: (re)write report.md and report.html of a run folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..report import write_report


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="(re)write report.md and report.html of a run folder")
    p.add_argument("run_dir")


def run(args: argparse.Namespace) -> int:
    md, html = write_report(Path(args.run_dir))
    print(f"wrote {md} and {html}")
    return 0
