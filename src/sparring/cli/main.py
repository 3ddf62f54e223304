"""The sparring command line: one module per subcommand (``add(sub)`` declares its options, ``run(args)`` does
it). Every SparringError becomes one line on stderr and exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ..errors import SparringError
from . import audit, certify, defend, detect, evaluate, fool, listing, report, run, train
from .options import Parser, install_logging

__all__ = ["COMMANDS", "build_parser", "main"]

#: subcommand name -> its module, in the order `sparring --help` lists them
COMMANDS = {"list": listing, "train": train, "defend": defend, "evaluate": evaluate, "fool": fool, "detect": detect,
            "certify": certify, "audit": audit, "run": run, "report": report}


def build_parser() -> Parser:
    parser = Parser(prog="sparring", description="Attack, defend and audit image classifiers.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in COMMANDS.values():
        module.add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `sparring` command; returns the exit code."""
    try:
        install_logging()
        args = build_parser().parse_args(argv)
        return int(COMMANDS[args.command].run(args) or 0)
    except SparringError as exc:
        print(f"sparring: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sparring: interrupted; finished work is kept: rerun `run` as it was, `train` or `defend` with "
              "--resume", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
