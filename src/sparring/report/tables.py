"""Records -> report blocks: the clean table, the robust-accuracy table
(rows = attack, columns = eps, as Table 1 of the seed report) and the per-cell details.

Blocks are plain data; markdown.py and html.py render the same blocks, so both reports state
the same facts. Every string here is raw (unescaped): escaping is the renderers' job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..paths import safe_name
from .io import Record

MISSING = "—"


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Facts:
    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""


@dataclass(frozen=True)
class Figure:
    name: str  # a safe file name, e.g. "curve-1-digits-cnn-none-linf.png"
    png: bytes
    caption: str


@dataclass(frozen=True)
class Code:
    title: str
    text: str


Block = Heading | Paragraph | Facts | Table | Figure | Code


def slug(text: object) -> str:
    """A figure file-name piece: sparring.paths.safe_name, at most 40 characters."""
    return safe_name(text, 40)


def robust_value(record: Record, group: dict[str, list[Record]], over: str) -> float | None:
    """A cell's robust accuracy over all n samples, or over the correctly classified ones (over="correct",
    the seed report's Table 1)."""
    if over != "correct":
        return number(record.get("robust_accuracy"))
    attacked = number(record.get("n_attacked"))
    if attacked is None and group["clean"]:
        attacked = number(group["clean"][-1].get("n_correct"))
    robust = number(record.get("n_robust"))
    return None if not attacked or robust is None else robust / attacked


def over_text(over: str) -> str:
    """What a robust accuracy is taken over, in words."""
    return "the correctly classified samples" if over == "correct" else "all n samples"


def number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def pct(value: Any) -> str:
    """A fraction as a percentage with two decimals: 0.1156 -> '11.56'; '—' when absent."""
    v = number(value)
    return MISSING if v is None else f"{100 * v:.2f}"


def num(value: Any, spec: str = ".4g") -> str:
    v = number(value)
    return MISSING if v is None else format(v, spec)


def get(data: Any, *keys: str) -> Any:
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def eps_label(record: Record) -> str:
    label = record.get("eps_label")
    if label in (None, ""):
        label = num(record["eps"], "g") if number(record.get("eps")) is not None else record.get("eps", MISSING)
    return str(label)


def eps_value(record: Record) -> float:
    v = number(record.get("eps"))
    return math.inf if v is None else v


def group_records(records: list[Record]) -> dict[tuple[str, str], dict[str, list[Record]]]:
    """Records by (model, defense), then by kind (clean, attack, worst_case), in file order."""
    groups: dict[tuple[str, str], dict[str, list[Record]]] = {}
    for r in records:
        key = (str(r.get("model") or "model"), str(r.get("defense") or "none"))
        groups.setdefault(key, {"clean": [], "attack": [], "worst_case": []}).setdefault(str(r["kind"]), []).append(r)
    return groups


def norms_of(group: dict[str, list[Record]]) -> list[str]:
    return list(dict.fromkeys(str(r.get("norm", "?")) for r in group["attack"] + group["worst_case"]))


def eps_columns(records: list[Record]) -> list[tuple[float, str]]:
    """(eps, label) pairs, sorted by eps, one per label."""
    seen: dict[str, float] = {}
    for r in records:
        seen.setdefault(eps_label(r), eps_value(r))
    return sorted(((v, k) for k, v in seen.items()), key=lambda p: (p[0], p[1]))


def clean_table(groups: dict[tuple[str, str], dict[str, list[Record]]]) -> Table:
    rows = []
    for (model, defense), g in groups.items():
        c = g["clean"][-1] if g["clean"] else {}
        rows.append((model, defense, num(c.get("n"), ".0f"), num(c.get("n_correct"), ".0f"), pct(c.get("accuracy")),
                     pct(c.get("mean_confidence")), num(c.get("time_s"), ".2f")))
    return Table(("model", "defense", "n", "correct", "clean accuracy (%)", "mean confidence (%)", "time (s)"),
                 tuple(rows), "Clean accuracy on the evaluated test samples.")


def lines_of(group: dict[str, list[Record]], norm: str) -> list[tuple[str, list[Record], bool]]:
    """(name, records, is worst case) per attack of one norm, then the worst case when present."""
    attacks = [r for r in group["attack"] if str(r.get("norm", "?")) == norm]
    names = dict.fromkeys(str(r.get("attack", "?")) for r in attacks)
    out = [(name, [r for r in attacks if str(r.get("attack", "?")) == name], False) for name in names]
    worst = [r for r in group["worst_case"] if str(r.get("norm", "?")) == norm]
    return out + ([("worst case", worst, True)] if worst else [])


def robust_table(model: str, defense: str, group: dict[str, list[Record]], norm: str, over: str = "all") -> Table:
    """Rows = attack, columns = eps label, cells = robust accuracy (%) over all n samples or over the
    correctly classified ones (over="correct"); last row = worst case."""
    columns = [label for _, label in eps_columns([r for _, rs, _ in lines_of(group, norm) for r in rs])]
    rows = []
    for name, records, _ in lines_of(group, norm):
        cells = {eps_label(r): robust_value(r, group, over) for r in records}
        rows.append((name, *(pct(cells.get(col)) for col in columns)))
    caption = (f"Robust accuracy (%) of {model} / {defense} under {norm} attacks, over {over_text(over)}. "
               "Worst case: a sample counts as robust only when it survives every attack at that eps.")
    return Table((f"attack \\ eps ({norm})", *columns), tuple(rows), caption)


def detail_table(model: str, defense: str, group: dict[str, list[Record]]) -> Table:
    """One row per (attack, eps) cell."""
    def median(r: Record, norm: str, spec: str) -> str:
        return num(get(r, "norms", norm, "median"), spec)

    rows = []
    cells = [r for norm in norms_of(group) for _, recs, worst in lines_of(group, norm) if not worst
             for r in sorted(recs, key=eps_value)]
    for r in cells:
        rows.append((str(r.get("attack", "?")), str(r.get("norm", "?")), eps_label(r), pct(r.get("robust_accuracy")),
                     pct(r.get("attack_success_rate")), median(r, "l0", "g"), median(r, "l2", ".4g"),
                     median(r, "linf", ".4g"), pct(r.get("mean_confidence")), num(r.get("time_s"), ".2f"),
                     num(r.get("forward"), ",.0f"), num(r.get("backward"), ",.0f")))
    headers = ("attack", "norm", "eps", "robust acc (%)", "success rate (%)", "median L0", "median L2",
               "median Linf", "mean confidence (%)", "time (s)", "forward", "backward")
    caption = (f"Per-cell details for {model} / {defense}. Success rate is over the samples correct before the "
               "attack; norms and confidence describe successful perturbations only.")
    return Table(headers, tuple(rows), caption)


def curve_series(group: dict[str, list[Record]], norm: str,
                 over: str = "all") -> list[tuple[str, list[float], list[float], bool]]:
    """(label, eps values, robust accuracy %, dashed) per attack, then the worst case (dashed)."""
    series = []
    for name, records, dashed in lines_of(group, norm):
        pts = sorted((eps_value(r), 100 * v) for r in records
                     if (v := robust_value(r, group, over)) is not None and math.isfinite(eps_value(r)))
        if pts:
            series.append((name, [p[0] for p in pts], [p[1] for p in pts], dashed))
    return series


def numeric_columns(table: Table) -> list[bool]:
    """Whether each column holds only numbers (or '—'), for right alignment."""
    def is_num(text: str) -> bool:
        try:
            float(text.replace(",", ""))
        except ValueError:
            return text == MISSING
        return True
    return [bool(table.rows) and all(is_num(row[j]) for row in table.rows if j < len(row))
            for j in range(len(table.headers))]
