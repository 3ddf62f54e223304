"""DEFENSES: every defense a config or the CLI can name, with its flags."""

from __future__ import annotations

from typing import Any

from ..registry import Registry

DEFENSES: Registry[Any] = Registry("defense")

__all__ = ["DEFENSES"]
