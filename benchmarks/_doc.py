"""What the benchmark scripts share to write their Markdown result: the machine line and the output."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch


def machine(device: str) -> str:
    """Date, machine, CPU count, torch version and device, for a doc's command line."""
    return (f"{time.strftime('%Y-%m-%d')}, {platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, "
            f"torch {torch.__version__}, device {device}")


def publish(text: str, out: str | None) -> None:
    """Print the doc and write it to `out` when given."""
    print(text)
    if out:
        Path(out).write_text(text, encoding="utf-8")
