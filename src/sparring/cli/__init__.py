"""The sparring command line (`sparring` and `python -m sparring`)."""

from __future__ import annotations

from .main import COMMANDS, build_parser, main
from .options import parse_attack

__all__ = ["COMMANDS", "build_parser", "main", "parse_attack"]
