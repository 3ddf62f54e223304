"""The report's audit section: the verdict, each check with its evidence, naive vs adaptive robust accuracy."""

from __future__ import annotations

from .io import Record
from .tables import Block, Heading, Paragraph, Table, pct

_MARK = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


def audit_blocks(records: list[Record]) -> list[Block]:
    """Blocks for the last audit record of each (model, defense); empty when the run has none."""
    last: dict[tuple[str, str], Record] = {}
    for r in records:
        if r.get("kind") == "audit":
            last[(str(r.get("model") or "model"), str(r.get("defense") or "none"))] = r
    blocks: list[Block] = []
    for (model, defense), r in last.items():
        blocks.append(Heading(f"Audit: {model} / {defense}", 3))
        verdict = str(r.get("verdict", "unknown"))
        if verdict == "error":
            blocks.append(Paragraph(f"The audit could not run: {r.get('error', 'unknown error')}"))
            continue
        blocks.append(Paragraph(
            f"Verdict: {verdict.upper()} on the first {r.get('n', '?')} images, {r.get('norm', '?')}. A failed check "
            "means the naive numbers above may overstate robustness (gradient masking); the adaptive re-run "
            "below applies the fixes the failures call for."))
        checks = [c for c in r.get("checks", []) if isinstance(c, dict)]
        rows = tuple((_MARK.get(str(c.get("status")), str(c.get("status"))), str(c.get("name", "")),
                      str(c.get("evidence", "")),
                      "; ".join(p for p in (str(c.get("cause") or ""), f"fix: {c['fix']}" if c.get("fix") else "")
                                if p))
                     for c in checks)
        blocks.append(Table(("status", "check", "evidence", "cause and fix"), rows, "Gradient-masking checks"))
        naive, adaptive = r.get("naive") or {}, r.get("adaptive") or {}
        if naive:
            headers = ("eps", "naive robust %") + (("adaptive robust %",) if adaptive else ())
            by_eps = tuple((str(e), pct(v)) + ((pct(adaptive.get(e)),) if adaptive else ()) for e, v in naive.items())
            caption = "Naive: PGD with cross-entropy on the model as it is."
            if adaptive:
                caption += (" Adaptive: " + "; ".join(map(str, r.get("changes", [])))
                            + " (robust only if robust to every attack the audit ran).")
            blocks.append(Table(headers, by_eps, caption))
    return blocks
