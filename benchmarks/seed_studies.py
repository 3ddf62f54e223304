"""Write a seed study's doc from its `sparring run` folder: the tables, the seed's own numbers beside
ours with the differences, the shape checks of issue 5 (holds / does not hold), and the audit.

    sparring run configs/study-a-cifar10-cpu.toml --out runs/study-a-cpu
    python benchmarks/seed_studies.py a runs/study-a-cpu --out docs/study-a-cifar10.md

Studies: a (student report, CIFAR-10), b (blur article), c (course task), d (blog post).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from sparring.report import markdown  # noqa: E402
from sparring.report.io import load_run  # noqa: E402
from sparring.report.tables import Table, eps_label, group_records, over_text, robust_value  # noqa: E402

# The seed report's Table 1 (validation accuracy, %, on the correctly classified images) and Table 2.
SEED_TABLE1 = {"fgsm": {"0.001": 84.61, "0.01": 54.05, "0.05": 22.0, "0.1": 21.74, "0.3": 20.57, "0.5": 13.77},
               "pgd": {"0.001": 27.75, "0.01": 12.47, "0.05": 7.71, "0.1": 7.75, "0.3": 7.79, "0.5": 7.89}}
SEED_TABLE2 = {("fgsm", "none"): (47.95, 7.31), ("fgsm", "AT vs FGSM"): (68.53, 43.15),
               ("fgsm", "AT vs PGD"): (68.74, 16.92), ("pgd", "none"): (57.99, 0.0),
               ("pgd", "AT vs FGSM"): (88.32, 3.55), ("pgd", "AT vs PGD"): (91.28, 13.33)}
TITLES = {"a": "Seed study (a): the student report on CIFAR-10 (seeds/001)",
          "b": "Seed study (b): the blur article (seeds/000)",
          "c": "Seed study (c): the course task (seeds/002)",
          "d": "Seed study (d): the blog post (seeds/004)"}


class Study:
    """A run folder's numbers by (variant, attack, eps label)."""

    def __init__(self, run_dir: str) -> None:
        self.run = load_run(run_dir)
        self.over = str(self.run.config.get("evaluate", {}).get("over", "all"))
        self.groups = group_records(self.run.records)
        self.variants = [d for _, d in self.groups]

    def group(self, variant: str) -> dict[str, list[dict]]:
        return next(g for (_, d), g in self.groups.items() if d == variant)

    def clean(self, variant: str) -> float:
        return 100 * self.group(variant)["clean"][-1]["accuracy"]

    def cell(self, variant: str, attack: str, eps: str) -> dict | None:
        g = self.group(variant)
        return next((r for r in g["attack"] + g["worst_case"]
                     if (r.get("attack", "worst case") if r["kind"] == "attack" else "worst case") == attack
                     and eps_label(r) == eps), None)

    def robust(self, variant: str, attack: str, eps: str, *, over: str | None = None) -> float:
        r = self.cell(variant, attack, eps)
        v = None if r is None else robust_value(r, self.group(variant), over or self.over)
        return math.nan if v is None else 100 * v

    def attacks(self) -> list[str]:
        return list(dict.fromkeys(r["attack"] for g in self.groups.values() for r in g["attack"]))

    def eps_of(self, attack: str) -> list[str]:
        return list(dict.fromkeys(eps_label(r) for g in self.groups.values() for r in g["attack"]
                                  if r["attack"] == attack))

    def train_time(self, variant: str) -> str:
        models = self.run.manifest.get("models") or {}
        info = next((v for k, v in models.items() if k.split("|")[-1] == variant), None)
        t = (info or {}).get("train_time_s")
        return f"{t / 60:.1f} min" if isinstance(t, (int, float)) else "—"

    def audit(self, variant: str) -> dict | None:
        return next((r for r in reversed(self.run.records) if r.get("kind") == "audit" and r.get("defense") == variant),
                    None)


def f(v: float) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """The report's Markdown table (escaped cells, numeric columns right-aligned) as lines."""
    return markdown.table(Table(tuple(headers), tuple(tuple(str(c) for c in row) for row in rows))).splitlines()


def matrix_rows(s: Study, attacks: list[str] | None = None) -> list[str]:
    lines: list[str] = []
    for attack in attacks or s.attacks() + ["worst case"]:
        eps = s.eps_of(attack) if attack != "worst case" else s.eps_of(s.attacks()[0])
        lines += [f"**{attack}**", ""]
        lines += table(["model / defense", "clean", *[f"eps {e}" for e in eps]],
                       [[v, f(s.clean(v)), *[f(s.robust(v, attack, e)) for e in eps]] for v in s.variants])
        lines.append("")
    return lines


def audit_rows(s: Study) -> list[str]:
    rows = []
    for v in s.variants:
        a = s.audit(v)
        if a is None:
            continue
        failed = [c["name"] for c in a.get("checks", []) if c.get("status") in ("fail", "warn")]
        naive, adaptive = a.get("naive") or {}, a.get("adaptive") or {}
        nums = "; ".join(f"eps {e}: {100 * naive[e]:.1f}" + (f" → {100 * adaptive[e]:.1f}" if e in adaptive else "")
                         for e in naive)
        rows.append([v, a.get("verdict", "?").upper(), ", ".join(failed) or "none", nums])
    return table(["model / defense", "audit", "checks failed or warned", "naive → adaptive robust % (first n)"], rows)


def holds(ok: bool) -> str:
    return "holds" if ok else "**does not hold**"


def study_a(s: Study) -> list[str]:
    none = "none"
    lines = ["## Table 1: accuracy under attack on the correctly classified test images (%)", ""]
    rows, pgd_first = [], True
    for attack in ("fgsm", "pgd"):
        for e in SEED_TABLE1[attack]:
            ours, theirs = s.robust(none, attack, e, over="correct"), SEED_TABLE1[attack][e]
            rows.append([attack.upper(), e, f(ours), f(theirs), f(ours - theirs)])
    lines += table(["attack", "eps", "sparring", "seed report", "difference"], rows) + [""]
    pgd_first = all(s.robust(none, "pgd", e) <= s.robust(none, "fgsm", e) for e in SEED_TABLE1["pgd"])
    lines += [f"Shape: PGD at least as strong as FGSM at every eps: {holds(pgd_first)}.", ""]
    lines += ["## Table 2: adversarial training (%, eps 0.01 and 0.05)", ""]
    rows = []
    for attack in ("fgsm", "pgd"):
        for v in ("none", "AT vs FGSM", "AT vs PGD"):
            ours = [s.robust(v, attack, e, over="correct") for e in ("0.01", "0.05")]
            theirs = SEED_TABLE2[(attack, v)]
            rows.append([attack.upper(), v, f(ours[0]), f(theirs[0]), f(ours[1]), f(theirs[1])])
    lines += table(["attack", "defense", "0.01 sparring", "0.01 seed", "0.05 sparring", "0.05 seed"], rows) + [""]
    raised = all(s.robust(v, "pgd", e) > s.robust(none, "pgd", e) for v in ("AT vs FGSM", "AT vs PGD")
                 for e in ("0.01", "0.05"))
    lines += [f"Shape: adversarial training raises PGD robust accuracy at 0.01 and 0.05: {holds(raised)}.", ""]
    lines += ["## Gaussian noise layers (the report's Figures 6 and 7): FGSM accuracy (%, correctly classified)", ""]
    eps = list(SEED_TABLE1["fgsm"])
    noise = [v for v in s.variants if v.startswith("noise")]
    lines += table(["model", "clean", *eps],
                   [[v, f(s.clean(v)), *[f(s.robust(v, "fgsm", e, over="correct")) for e in eps]]
                    for v in [none, *noise]]) + [""]
    gain = max(abs(s.robust(v, "fgsm", e) - s.robust(none, "fgsm", e)) for v in noise for e in eps)
    lines += [f"Largest FGSM difference between a noise model and the base model: {gain:.1f} points (the report: "
              "noise layers gave no real robustness, 'slightly lower' accuracy).", ""]
    return lines


def study_b(s: Study) -> list[str]:
    lines = ["## The article's ranking and the honest number", ""]
    rows = []
    for v in s.variants:
        unbounded = s.cell(v, "article attack", "inf")
        mean = (unbounded or {}).get("norms", {}).get("l2") or {}
        success = (unbounded or {}).get("attack_success_rate")
        score = s.clean(v) / 100 * mean.get("mean", math.nan)
        rows.append((score, [v, f(s.clean(v)), f(100 * success if success is not None else math.nan),
                             f"{mean.get('mean', math.nan):.3f}", f"{score:.3f}",
                             f(s.robust(v, "article attack", "1.5")), f(s.robust(v, "pgd", "1.5"))]))
    rows.sort(key=lambda r: -r[0] if not math.isnan(r[0]) else math.inf)
    lines += table(["filter (train and test)", "clean", "article attack success (unbounded)", "mean L2",
                    "score = acc x mean L2", "robust @ L2 1.5, article attack", "robust @ L2 1.5, PGD-50 (BPDA)"],
                   [r for _, r in rows]) + [""]
    clean = [s.clean(v) for v in ("no blur", "gaussian 1", "gaussian 2")]
    apparent = all(s.robust(v, "article attack", "1.5") > s.robust(v, "pgd", "1.5") for v in s.variants)
    lines += [f"Best by the article's score: **{rows[0][1][0]}**.",
              f"Shape: stronger blur costs clean accuracy (none {clean[0]:.1f} -> sigma 1 {clean[1]:.1f} -> sigma 2 "
              f"{clean[2]:.1f}): {holds(clean[0] >= clean[2])}.",
              f"Shape: the article's attack overstates robustness against the adaptive PGD at L2 1.5 for every "
              f"filter: {holds(apparent)}.", ""]
    return lines


def study_c(s: Study) -> list[str]:
    lines = ["## Before and after retraining with adversarial examples (%, all n test images)", ""]
    base = s.variants[0]
    rows = []
    for attack in s.attacks():
        for e in s.eps_of(attack):
            rows.append([attack.upper(), e, *[f(s.robust(v, attack, e)) for v in s.variants]])
    lines += table(["adversarial test set", "eps", *s.variants], rows) + [""]
    raised = all(s.robust(v, a, e) > s.robust(base, a, e) for v in s.variants[1:] for a in s.attacks()
                 for e in s.eps_of(a))
    lines += ["Clean accuracy: " + ", ".join(f"{v} {f(s.clean(v))}%" for v in s.variants) + ".",
              f"Shape: retraining with clean + adversarial examples raises accuracy on every adversarial test set: "
              f"{holds(raised)}.", ""]
    return lines


def study_d(s: Study) -> list[str]:
    lines = ["## White-box and black-box error (%, 100 - robust accuracy, all n test images) at eps 0.3", ""]
    attacks = s.attacks()
    rows = [[v, f(100 - s.clean(v)), *[f(100 - s.robust(v, a, "0.3")) for a in attacks]] for v in s.variants]
    lines += table(["model", "clean error", *[f"{a} error" for a in attacks]], rows) + [""]
    black = [a for a in attacks if a.startswith(("transfer", "substitute"))]
    worst_black = {v: max(100 - s.robust(v, a, "0.3") for a in black) for v in s.variants}
    lines += [f"Shape: FGSM fools the undefended model (error {f(100 - s.robust('none', 'fgsm', '0.3'))}%): "
              f"{holds(100 - s.robust('none', 'fgsm', '0.3') > 50)}.",
              f"Shape: the substitute black-box attack fools the undefended model (error "
              f"{f(100 - s.robust('none', 'substitute', '0.3'))}%): "
              f"{holds(100 - s.robust('none', 'substitute', '0.3') > 30)}.",
              f"Shape: FGSM adversarial training resists white-box FGSM better than black-box attacks (FGSM error "
              f"{f(100 - s.robust('FGSM AT', 'fgsm', '0.3'))}% vs black-box {f(worst_black['FGSM AT'])}%): "
              f"{holds(100 - s.robust('FGSM AT', 'fgsm', '0.3') < worst_black['FGSM AT'])}.",
              f"Shape: ensemble adversarial training lowers the black-box error ({f(worst_black['ensemble AT'])}% vs "
              f"{f(worst_black['FGSM AT'])}% for FGSM AT): "
              f"{holds(worst_black['ensemble AT'] < worst_black['FGSM AT'])}.", ""]
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study", choices=sorted(TITLES))
    p.add_argument("run_dir")
    p.add_argument("--out", required=True)
    p.add_argument("--config", default=None, help="the config the run used (for the command line shown)")
    p.add_argument("--notes", default=None, help="a Markdown file of hand-written notes to append")
    args = p.parse_args()
    s = Study(args.run_dir)
    m = s.run.manifest
    config = args.config or f"configs/{m.get('config', '?')}.toml"
    lines = [f"# {TITLES[args.study]}", "",
             f"Commands: `sparring run {config} --out {args.run_dir}` then "
             f"`python benchmarks/seed_studies.py {args.study} {args.run_dir} --out {args.out}"
             + (f" --notes {args.notes}" if args.notes else "") + "`.",
             f"Run: {m.get('started', '?')}, sparring {m.get('sparring', '?')}, torch {m.get('torch', '?')}, device "
             f"{m.get('device', '?')}, {m.get('threads', '?')} thread(s); "
             f"dataset {m.get('dataset', {}).get('name', '?')}, "
             f"first {m.get('dataset', {}).get('n', '?')} test images, seed {m.get('seed', '?')}.", "",
             "## Models", ""]
    lines += table(["model / defense", "clean accuracy (%)", "training time"],
                   [[v, f(s.clean(v)), s.train_time(v)] for v in s.variants]) + [""]
    lines += {"a": study_a, "b": study_b, "c": study_c, "d": study_d}[args.study](s)
    lines += [f"## Every cell (robust accuracy %, over {over_text(s.over)})", ""] + matrix_rows(s)
    lines += ["## Audit (gradient masking)", ""] + audit_rows(s) + [""]
    if args.notes:
        lines += [Path(args.notes).read_text(encoding="utf-8").rstrip(), ""]
    lines.append(f"Written by benchmarks/seed_studies.py on {time.strftime('%Y-%m-%d')}.")
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
