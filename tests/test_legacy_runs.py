"""Run folders written before the layers change (by main at 08d7ef3, from tests/data/legacy/*.toml: a
defended single run and a two-variant matrix; their report files left out) still resume: the saved model
is loaded, not retrained, the missing cells are computed again with the same results, the finished ones
are kept, and a finished folder gets nothing new."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sparring.cli import main

LEGACY = Path(__file__).resolve().parent / "data" / "legacy"


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines() if line.strip()]


@pytest.mark.slow
@pytest.mark.parametrize("name, config, keep", [("legacy-run", "legacy.toml", 3), ("legacy-matrix", "legacy-matrix.toml", 2)])
def test_a_folder_written_before_resumes(tmp_path, capsys, name, config, keep):
    folder = tmp_path / name
    shutil.copytree(LEGACY / name, folder)
    original = _records(folder)
    lines = (folder / "results.jsonl").read_text().splitlines(keepends=True)
    (folder / "results.jsonl").write_text("".join(lines[:keep]) + lines[keep][: len(lines[keep]) // 2])  # a kill
    assert main(["run", str(LEGACY / config), "--out", str(folder)]) == 0
    assert "loaded the model trained earlier in this run" in capsys.readouterr().err
    resumed = _records(folder)
    assert [r["cell"] for r in resumed] == [r["cell"] for r in original]
    for old, new in zip(original, resumed):
        for key in ("accuracy", "robust_accuracy", "robust_bits", "n_robust", "verdict", "naive", "adaptive"):
            assert old.get(key) == new.get(key), (old["cell"], key)
    assert (folder / "report.html").is_file()
    assert main(["run", str(LEGACY / config), "--out", str(folder)]) == 0  # finished: nothing appended
    assert len(_records(folder)) == len(resumed)
