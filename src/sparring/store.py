"""The run folder on disk: resolved config, manifest, append-only results.jsonl.

Records are appended one line at a time and fsynced, so a killed run loses at most the cell it
was computing; a partial last line (killed mid-write) is cut off when the folder is reopened.
A folder is reopened for the same config by value: its config.toml is parsed with today's defaults, so a
field added since (with its default) does not stop an old folder from resuming; a changed value does.
An open folder is locked (flock on its .lock file, released when the process ends, even by SIGKILL), so a
second run on the same folder refuses in one line instead of interleaving records with the first.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import platform
import subprocess
import sys
import time
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy
import torch

from .config import Config, config_from_dict, dump_toml
from .errors import ConfigError, DataError
from .records import SCHEMA, Record, check_record
from .util import write_atomic
from .version import __version__

__all__ = ["RunStore", "environment", "git_sha"]


class RunStore:
    """One run folder. Example: store = RunStore(Path("runs/digits")); store.append(record)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.results = self.root / "results.jsonl"
        self._lock_fd: int | None = None

    def open(self, config: Config) -> None:
        """Create the folder and lock it, or check that an existing one holds a run of the same config (by
        value). Raises ConfigError when another process holds the folder or its config differs."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock()
        path = self.root / "config.toml"
        if path.exists():
            saved = self._saved(path)
            if saved != config:
                raise ConfigError(f"{self.root} holds a run of a different config ({_difference(saved, config)}; "
                                  f"see {path}); pass --out NEW_DIR, or delete the folder to start over")
        else:
            write_atomic(path, dump_toml(config))
        self._repair_tail()

    def _lock(self) -> None:
        if self._lock_fd is not None:
            return
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise ConfigError(f"{self.root} is in use by another sparring run ({holder}); wait for it to finish, "
                              f"or pass --out NEW_DIR") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}, since {time.strftime('%Y-%m-%dT%H:%M:%S%z')}".encode())
        self._lock_fd = fd

    def close(self) -> None:
        """Release the folder's lock (also done when the store is collected or the process ends)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __del__(self) -> None:
        self.close()

    @staticmethod
    def _saved(path: Path) -> Config:
        try:
            return config_from_dict(tomllib.loads(path.read_text(encoding="utf-8")))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{path} is not valid TOML ({exc}); delete the folder to start over") from None
        except ConfigError as exc:
            raise ConfigError(f"{path} holds a config this sparring cannot read ({exc}); pass --out NEW_DIR") from None

    def _repair_tail(self) -> None:
        if not self.results.exists():
            return
        data = self.results.read_bytes()
        if data and not data.endswith(b"\n"):
            with self.results.open("r+b") as fh:
                fh.truncate(data.rfind(b"\n") + 1)

    def done(self) -> dict[str, Record]:
        """Finished cells by key (later lines win); each line checked with sparring.records.check_record."""
        out: dict[str, Record] = {}
        if not self.results.exists():
            return out
        for number, line in enumerate(self.results.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise DataError(f"{self.results}:{number} is not a JSON record; fix or delete the line") from None
            record = check_record(record, f"{self.results}:{number}")
            out[record["cell"]] = record
        return out

    def append(self, record: Record) -> None:
        """Append one record (with the current schema) and fsync it."""
        with self.results.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({**record, "schema": SCHEMA}, sort_keys=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """manifest.json with the schema; a resumed run keeps the first one and adds its start time."""
        path = self.root / "manifest.json"
        manifest = {**manifest, "schema": SCHEMA}
        if path.exists():
            old = json.loads(path.read_text(encoding="utf-8"))
            manifest = {**old, "resumed": old.get("resumed", []) + [manifest["started"]]}
        write_atomic(path, json.dumps(manifest, indent=2) + "\n")


def _difference(saved: Config, given: Config) -> str:
    """"data.n was 60, got 40": the first field where two configs differ."""
    a, b = dataclasses.asdict(saved), dataclasses.asdict(given)
    for key in a:
        if a[key] != b[key]:
            if isinstance(a[key], dict) and isinstance(b[key], dict):
                sub = next((k for k in a[key] if a[key][k] != b[key].get(k)), None)
                if sub is not None:
                    return f"{key}.{sub} was {a[key][sub]!r}, got {b[key][sub]!r}"
            return f"{key} was {a[key]!r:.80}, got {b[key]!r:.80}"
    return "they differ"


def git_sha() -> str | None:
    """The git commit of the sparring checkout, when it is one."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def environment(device: str) -> dict[str, Any]:
    """Versions and hardware for the manifest."""
    return {
        "sparring": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
        "numpy": numpy.__version__, "scikit_learn": _version("scikit-learn"), "platform": platform.platform(),
        "device": device, "cuda": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
        "threads": torch.get_num_threads(), "git_sha": git_sha(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
