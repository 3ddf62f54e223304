"""What the benchmark scripts share to write their Markdown result: the machine line, the device's name,
the doc's layout and the output."""

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


def device_name(device: str) -> str:
    """The GPU's name for cuda / cuda:K, else "cpu, T threads"."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(int(device.split(":")[1]) if ":" in device else 0)
    return f"cpu, {torch.get_num_threads()} threads"


def table_doc(title: str, command: str, about: str, header: str, align: str, rows: list[str]) -> str:
    """A result doc: the title, the command line (with machine()), what was measured, and the table."""
    return "\n".join([f"# {title}", "", command, "", about, "", header, align, *rows, ""])


def publish(text: str, out: str | None) -> None:
    """Print the doc and write it to `out` when given."""
    print(text)
    if out:
        Path(out).write_text(text, encoding="utf-8")
