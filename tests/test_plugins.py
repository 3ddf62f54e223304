"""A defense written as one file (tests/plugins/sparring_example_defense.py) and installed as a plugin (the
dist-info folder beside it: the "sparring.defenses" entry point) appears in `sparring list defenses`, trains
behind a model with `sparring defend`, runs from a config and is in the registry the invariant suite reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sparring.defenses import DEFENSES

PLUGINS = Path(__file__).resolve().parent / "plugins"
SRC = Path(__file__).resolve().parent.parent / "src"


def _sparring(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGINS), str(SRC), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "sparring", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_the_plugin_is_in_the_registry():
    spec = DEFENSES.get("example-contrast")  # conftest put tests/plugins on sys.path: the entry point is found
    assert spec.kind == "preprocess" and spec.differentiable and not spec.random
    assert spec.check({"strength": 1}) == {"strength": 1.0}


@pytest.mark.slow
def test_the_plugin_works_from_the_cli_and_a_config(tmp_path):
    listed = _sparring("list", "defenses", cwd=tmp_path)
    assert listed.returncode == 0 and "example-contrast" in listed.stdout and "strength=0.5" in listed.stdout
    out = tmp_path / "m"
    done = _sparring("defend", "--defense", "example-contrast:strength=0.8", "--epochs", "2", "--out", str(out),
                     cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["defense"] == [{"name": "example-contrast", "params": {"strength": 0.8}}]
    evaluated = _sparring("evaluate", "--model", str(out), "--attack", "pgd:steps=3", "--eps", "0.1", "--n", "20",
                          "--json", cwd=tmp_path)
    assert evaluated.returncode == 0 and "pgd" in json.loads(evaluated.stdout)["attacks"]
    config = tmp_path / "c.toml"
    config.write_text('name = "plugin"\n[data]\nn = 20\n[train]\nepochs = 1\n[evaluate]\neps = ["0.1"]\n'
                      '[audit]\nenabled = false\n[[attacks]]\nname = "fgsm"\n'
                      '[[defenses]]\nname = "example-contrast"\nstrength = 0.5\n')
    ran = _sparring("run", str(config), "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-2000:]
    records = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert {r["defense"] for r in records} == {"example-contrast"} and len(records) == 3
    wrong = _sparring("defend", "--defense", "example-contrast:power=2", "--out", str(tmp_path / "x"), cwd=tmp_path)
    assert wrong.returncode == 2 and "does not take power (accepted: strength)" in wrong.stderr
