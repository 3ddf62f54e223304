"""Killing `sparring run` (SIGKILL, at seeded random moments, at least 5 times over 30+ cells) and
re-running gives the records of an uninterrupted run: none lost, none twice, same values."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CONFIG = """name = "kill"
seed = 3
[data]
n = 100
[train]
epochs = 3
[evaluate]
eps = ["0.02", "0.04", "0.06", "0.08", "0.1", "0.15", "0.2", "0.3"]
gallery = 2
[[attacks]]
name = "fgsm"
[[attacks]]
name = "pgd"
steps = 20
[[attacks]]
name = "pgd"
steps = 20
loss = "margin"
label = "pgd-margin"
[[attacks]]
name = "bim"
steps = 10
[audit]
n = 30
steps = 5
square_queries = 30
"""


def _run(config: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "sparring", "run", str(config), "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _count(out: Path) -> int:
    path = out / "results.jsonl"
    return path.read_text().count("\n") if path.exists() else 0


def _records(out: Path) -> list[dict]:
    lines = (out / "results.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if "time" not in k} for line in lines]


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_kills_at_random_moments_lose_and_repeat_nothing(tmp_path):
    config = tmp_path / "kill.toml"
    config.write_text(CONFIG)
    whole = tmp_path / "whole"
    assert _run(config, whole).wait(timeout=300) == 0
    expected = _records(whole)
    assert sum(r["kind"] == "attack" for r in expected) >= 30
    rng, out, kills = random.Random(0), tmp_path / "killed", 0
    for _ in range(30):  # each run: wait for 1-4 more records, then a random moment inside the next cell
        goal, proc = _count(out) + rng.randint(0, 3), _run(config, out)
        while proc.poll() is None and _count(out) <= goal:
            time.sleep(0.02)
        if proc.poll() is not None:
            assert proc.returncode == 0
            break
        time.sleep(rng.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    else:
        assert _run(config, out).wait(timeout=300) == 0
    assert kills >= 5
    got = _records(out)
    cells = [r["cell"] for r in got]
    assert len(cells) == len(set(cells)), "a cell was written twice"
    assert got == expected
