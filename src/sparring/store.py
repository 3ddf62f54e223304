"""The run folder on disk: resolved config, manifest, append-only results.jsonl.

Records are appended one line at a time and fsynced, so a killed run loses at most the cell it
was computing; a partial last line (killed mid-write) is cut off when the folder is reopened.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .errors import ConfigError, DataError


def write_atomic(path: Path, text: str) -> None:
    """Write text to path via a temp file and rename, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class RunStore:
    """One run folder. Example: store = RunStore(Path("runs/digits")); store.append(record)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.results = self.root / "results.jsonl"

    def open(self, config_toml: str) -> None:
        """Create the folder, or check that an existing one holds a run of the same config."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / "config.toml"
        if path.exists() and path.read_text(encoding="utf-8") != config_toml:
            raise ConfigError(f"{self.root} holds a run of a different config (see {path}); "
                              "pass --out NEW_DIR, or delete the folder to start over")
        if not path.exists():
            write_atomic(path, config_toml)
        self._repair_tail()

    def _repair_tail(self) -> None:
        if not self.results.exists():
            return
        data = self.results.read_bytes()
        if data and not data.endswith(b"\n"):
            with self.results.open("r+b") as fh:
                fh.truncate(data.rfind(b"\n") + 1)

    def done(self) -> dict[str, dict[str, Any]]:
        """Finished cells by key (later lines win)."""
        out: dict[str, dict[str, Any]] = {}
        if not self.results.exists():
            return out
        for number, line in enumerate(self.results.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise DataError(f"{self.results}:{number} is not a JSON record; fix or delete the line") from None
            out[record["cell"]] = record
        return out

    def append(self, record: dict[str, Any]) -> None:
        """Append one record and fsync it."""
        with self.results.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, sort_keys=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        path = self.root / "manifest.json"
        if path.exists():
            old = json.loads(path.read_text(encoding="utf-8"))
            manifest = {**old, "resumed": old.get("resumed", []) + [manifest["started"]]}
        write_atomic(path, json.dumps(manifest, indent=2) + "\n")


def git_sha() -> str | None:
    """The git commit of the sparring checkout, when it is one."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment(device: str) -> dict[str, Any]:
    """Versions and hardware for the manifest."""
    import numpy
    import sklearn
    import torch

    from . import __version__

    return {
        "sparring": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
        "numpy": numpy.__version__, "scikit_learn": sklearn.__version__, "platform": platform.platform(),
        "device": device, "cuda": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
        "threads": torch.get_num_threads(), "git_sha": git_sha(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
