"""The report package: a synthetic run folder in, report.md and report.html out."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from sparring.errors import DataError
from sparring.report import write_report
from sparring.report.markdown import escape as md_escape
from sparring.report.plots import difference
from sparring.report.tables import pct

EVIL = "<script>alert(1)</script>"
EPS = [(0.1, "0.1"), (0.05, "0.05"), (8 / 255, "8/255")]  # deliberately unsorted
ROBUST = {"fgsm": [0.4321, 0.6, 0.75], "pgd": [0.1156, 0.3, 0.5]}
WORST = [0.1, 0.25, 0.45]


def _gallery(path: Path, shape: tuple[int, ...], seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g)
    x_adv = (x + 0.05 * torch.randn(shape, generator=g)).clamp(0, 1)
    n = shape[0]
    torch.save({"x": x, "x_adv": x_adv, "y": torch.arange(n), "pred_clean": torch.arange(n),
                "pred_adv": (torch.arange(n) + 1) % 3, "conf_clean": torch.full((n,), 0.9),
                "conf_adv": torch.full((n,), 0.8), "index": torch.arange(n)}, path)


def make_run(root: Path, *, model: str = EVIL, defense: str = "a$_$b") -> Path:
    (root / "adversarial").mkdir(parents=True)
    (root / "config.toml").write_text('name = "synthetic"\nseed = 7\n\n[data]\nname = "digits"\nn = 100\n')
    manifest = {"seed": 7, "sparring": "0.1.0", "torch": "2.13.0", "numpy": "2.4", "python": "3.11",
                "device": "cpu", "started": "2025-01-02T03:04:05+0000", "git_sha": "0123456789abcdef0123",
                "dataset": {"name": "digits", "sha256": "f" * 64, "n": 100}, "classes": ["zero", "one", "two"]}
    (root / "manifest.json").write_text(json.dumps(manifest))
    _gallery(root / "adversarial" / "pgd-linf__eps2.pt", (4, 1, 8, 8), 0)
    _gallery(root / "adversarial" / "fgsm-linf__eps2.pt", (4, 3, 32, 32), 1)
    base = {"model": model, "defense": defense, "dataset": "digits"}
    records = [{**base, "kind": "clean", "cell": "clean", "n": 100, "n_correct": 97, "accuracy": 0.97,
                "mean_confidence": 0.95, "time_s": 0.1}]
    for attack, accs in ROBUST.items():
        for i, ((eps, label), acc) in enumerate(zip(EPS, accs)):
            rec = {**base, "kind": "attack", "cell": f"{attack}|linf|{label}", "attack": attack, "norm": "linf",
                   "eps": eps, "eps_label": label, "n": 100, "n_attacked": 97, "n_robust": round(acc * 100),
                   "robust_accuracy": acc, "attack_success_rate": 0.5, "mean_confidence": 0.9,
                   "norms": {k: {"mean": eps, "median": eps} for k in ("l0", "l1", "l2", "linf")},
                   "time_s": 1.25, "forward": 4840, "backward": 4400}
            if i == 2:
                rec["gallery"] = f"adversarial/{attack}-linf__eps2.pt"
            records.append(rec)
    for (eps, label), acc in zip(EPS, WORST):
        records.append({**base, "kind": "worst_case", "cell": f"worst|linf|{label}", "norm": "linf", "eps": eps,
                        "eps_label": label, "attacks": ["fgsm", "pgd"], "n": 100, "robust_accuracy": acc})
    (root / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


def table_row(md: str, name: str) -> list[str]:
    line = next(line for line in md.splitlines() if line.startswith(f"| {name} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_markdown_table_has_the_percentages(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    md_path, html_path = write_report(run)
    assert (md_path, html_path) == (run / "report.md", run / "report.html")
    md = md_path.read_text()
    header = table_row(md, r"attack \\ eps (linf)")
    assert header[1:] == ["8/255", "0.05", "0.1"]  # columns sorted by eps, labelled by eps_label
    assert table_row(md, "pgd") == ["pgd", "50.00", "30.00", "11.56"]
    assert table_row(md, "fgsm") == ["fgsm", "75.00", "60.00", "43.21"]
    assert table_row(md, "worst case") == ["worst case", "45.00", "25.00", "10.00"]
    assert "97.00" in md and "4,840" in md and "ffffffffffff" in md and "0123456789ab" in md
    links = re.findall(r"\]\((figures/[^)]+\.png)\)", md)
    assert len(links) == 3  # one curve, two galleries
    for link in links:
        assert (run / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert EVIL not in md and "&lt;script&gt;" in md
    assert not list(run.glob(".*.tmp")) and not list((run / "figures").glob(".*.tmp"))


def test_html_is_self_contained_and_escaped(tmp_path: Path) -> None:
    _, html_path = write_report(make_run(tmp_path / "run"))
    page = html_path.read_text()
    assert "<table>" in page and page.count('<img src="data:image/png;base64,') == 3
    assert '<meta name="viewport"' in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page
    assert not re.search(r"(src|href)=\"(?!data:)", page)  # nothing external
    assert "11.56" in page and "8/255" in page and "zero" not in page  # class names live in the PNGs


def test_truncated_last_line_and_later_duplicates(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    dup = json.loads((run / "results.jsonl").read_text().splitlines()[4])  # pgd|linf|0.1
    dup["robust_accuracy"] = 0.2222
    with (run / "results.jsonl").open("a") as fh:
        fh.write(json.dumps(dup) + "\n" + '{"kind": "attack", "cell": "pgd|linf|0.3", "robust_acc')
    md = write_report(run)[0].read_text()
    assert table_row(md, "pgd")[-1] == "22.22"
    assert "incomplete last line" in md and "0.3" not in table_row(md, r"attack \\ eps (linf)")


def test_errors_are_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="run folder"):
        write_report(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="results.jsonl"):
        write_report(tmp_path / "empty")
    run = make_run(tmp_path / "run")
    lines = (run / "results.jsonl").read_text().splitlines()
    (run / "results.jsonl").write_text("\n".join([lines[0], "{oops", *lines[1:]]) + "\n")
    with pytest.raises(DataError, match=":2 "):
        write_report(run)


def test_bad_gallery_paths_are_skipped_with_a_note(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", model="m", defense="none")
    text = (run / "results.jsonl").read_text()
    text = text.replace("adversarial/pgd-linf__eps2.pt", "../../outside.pt").replace("fgsm-linf", "missing")
    (run / "results.jsonl").write_text(text)
    (run / "manifest.json").unlink()
    (run / "config.toml").unlink()
    md = write_report(run)[0].read_text()
    assert "points outside the run folder" in md and "is missing" in md
    assert "| pgd | 50.00 | 30.00 | 11.56 |" in md


def test_helpers() -> None:
    assert pct(0.1156) == "11.56" and pct(None) == "—" and pct(float("nan")) == "—"
    assert md_escape("a|b\nc <i>") == r"a\|b c &lt;i&gt;"
    x = torch.zeros(1, 2, 2)
    d = difference(x, x + torch.tensor([0.0, 0.01, 0.1, -0.1]).view(1, 2, 2))
    assert torch.allclose(d.flatten(), torch.tensor([0.5, 0.6, 1.0, 0.0]))
