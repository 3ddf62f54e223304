"""Reading a run folder (config.toml, manifest.json, results.jsonl, gallery tensors) and
writing report files atomically. The layout is documented in docs/run-folder.md."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import DataError
from ..records import Record, check_record
from ..util import safe_load

__all__ = ["GALLERY_KEYS", "Record", "Run", "load_gallery", "load_run", "load_tensors", "read_records"]

GALLERY_KEYS = ("x", "x_adv")


@dataclass
class Run:
    """Everything a report needs from one run folder; `notes` collects what was skipped and why."""

    root: Path
    records: list[Record]
    config: dict[str, Any] = field(default_factory=dict)
    config_text: str = ""
    manifest: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def load_run(run_dir: str | Path) -> Run:
    """Read a run folder; raises DataError when the folder or results.jsonl is missing.

    Example:
        >>> run = load_run("runs/digits")
        >>> [r["cell"] for r in run.records][:1]
        ['clean']
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise DataError(f"expected a run folder, got {str(root)!r} (no such directory)")
    results = root / "results.jsonl"
    if not results.is_file():
        raise DataError(f"expected {results} in the run folder; run `sparring run` or `sparring evaluate --out` first")
    notes: list[str] = []
    records = read_records(results, notes)
    config_text, config = "", {}
    path = root / "config.toml"
    if path.is_file():
        config_text = path.read_text(encoding="utf-8", errors="replace")
        try:
            config = tomllib.loads(config_text)
        except tomllib.TOMLDecodeError as exc:
            notes.append(f"config.toml could not be parsed ({exc}); its facts are left out")
    manifest: dict[str, Any] = {}
    path = root / "manifest.json"
    if path.is_file():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
            manifest = loaded if isinstance(loaded, dict) else {}
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            notes.append(f"manifest.json could not be parsed ({exc}); its facts are left out")
    return Run(root, records, config, config_text, manifest, notes)


def read_records(path: Path, notes: list[str] | None = None) -> list[Record]:
    """Records of results.jsonl, later duplicates of a `cell` replacing earlier ones in place.

    Each line is checked with sparring.records.check_record (kind, cell, the required keys of its kind and
    their types). A broken last line (a run killed mid-write) is skipped with a note; a broken line
    elsewhere raises DataError, as the run store does.
    """
    lines = path.read_bytes().decode("utf-8", errors="replace").splitlines()
    numbered = [(i, line) for i, line in enumerate(lines, 1) if line.strip()]
    by_cell: dict[str, Record] = {}
    for position, (number, line) in enumerate(numbered):
        try:
            record = check_record(json.loads(line), f"{path}:{number}")
        except (ValueError, DataError) as exc:
            if position == len(numbered) - 1:
                if notes is not None:
                    notes.append(f"skipped an incomplete last line ({number}) of results.jsonl")
                continue
            detail = str(exc) if isinstance(exc, DataError) else f"{path}:{number} is not a JSON record"
            raise DataError(f"{detail}; fix or delete the line") from None
        by_cell[record["cell"]] = record
    return list(by_cell.values())


def load_tensors(run: Run, relative: str, keys: tuple[str, ...], what: str) -> dict[str, torch.Tensor] | None:
    """The dict of tensors at run_dir/relative holding `keys`, or None (with a note) when unreadable,
    unsafe (outside the run folder) or lacking a key. Never executes code (weights_only)."""
    root = run.root.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        run.notes.append(f"{what} {relative!r} points outside the run folder; skipped")
        return None
    if not path.is_file():
        run.notes.append(f"{what} {relative!r} is missing; skipped")
        return None
    try:
        data = safe_load(path, what)
    except DataError as exc:  # a corrupt or foreign file must not stop the report
        run.notes.append(f"{what} {relative!r} could not be loaded ({str(exc)[:160]}); skipped")
        return None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), torch.Tensor) for k in keys):
        run.notes.append(f"{what} {relative!r} does not hold the tensors {', '.join(keys)}; skipped")
        return None
    return {k: v.detach().cpu() for k, v in data.items() if isinstance(v, torch.Tensor)}


def load_gallery(run: Run, relative: str) -> dict[str, torch.Tensor] | None:
    """The gallery tensors a record names, or None (with a note) when unreadable or unsafe."""
    data = load_tensors(run, relative, GALLERY_KEYS, "gallery")
    if data is None:
        return None
    x, x_adv = data["x"], data["x_adv"]
    if not (x.dim() == 4 and x.shape == x_adv.shape and x.shape[0] > 0):
        run.notes.append(f"gallery {relative!r} does not hold x and x_adv of shape (N, C, H, W); skipped")
        return None
    return data
