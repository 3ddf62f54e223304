"""Two runs on one folder: the second refuses in one line and the first is undisturbed; the lock goes
away with its process, even a killed one, so a killed run still resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sparring.cli import main
from sparring.config import load_config
from sparring.store import RunStore

CONFIG = """name = "lock"
seed = 1
[data]
n = 60
[train]
epochs = 2
[evaluate]
eps = ["0.05", "0.1"]
gallery = 0
[audit]
enabled = false
[[attacks]]
name = "fgsm"
[[attacks]]
name = "pgd"
steps = 10
"""


def _records(folder: Path) -> list[dict]:
    keep = ("cell", "robust_accuracy", "accuracy")
    lines = (folder / "results.jsonl").read_text().splitlines()
    return sorted(({k: r.get(k) for k in keep} for r in map(json.loads, lines)), key=lambda r: r["cell"])


def test_a_locked_folder_refuses_in_one_line_then_opens(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text(CONFIG)
    out = tmp_path / "out"
    holder = RunStore(out)
    holder.open(load_config(config))
    assert main(["run", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is in use by another sparring run (pid " in err[0] and str(os.getpid()) in err[0]
    assert not (out / "results.jsonl").exists() and not (out / "models").exists()  # nothing trained
    holder.close()
    assert main(["run", str(config), "--out", str(out)]) == 0
    assert len(_records(out)) == 7  # clean, 2 attacks x 2 eps, the worst case at each eps


def _sparring_run(config: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "sparring", "run", str(config), "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for_lock(out: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not (out / ".lock").exists() or not (out / ".lock").read_text().startswith("pid"):
        assert process.poll() is None and time.monotonic() < deadline, "the first run never opened its folder"
        time.sleep(0.05)


@pytest.mark.slow
def test_two_concurrent_runs_and_a_killed_one(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(CONFIG)
    first = _sparring_run(config, tmp_path / "shared")
    _wait_for_lock(tmp_path / "shared", first)
    second = _sparring_run(config, tmp_path / "shared")
    _, err = second.communicate(timeout=120)
    assert second.returncode == 2 and len(err.strip().splitlines()) == 1 and "is in use" in err, err
    assert first.wait(timeout=600) == 0
    alone = _sparring_run(config, tmp_path / "alone")
    assert alone.wait(timeout=600) == 0
    assert _records(tmp_path / "shared") == _records(tmp_path / "alone")  # no record lost or written twice

    killed = _sparring_run(config, tmp_path / "killed")
    _wait_for_lock(tmp_path / "killed", killed)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    again = _sparring_run(config, tmp_path / "killed")
    assert again.wait(timeout=600) == 0, again.stderr.read() if again.stderr else ""
    assert _records(tmp_path / "killed") == _records(tmp_path / "alone")
