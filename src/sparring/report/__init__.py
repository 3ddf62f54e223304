"""The run report: report.md and report.html from a run folder (docs/run-folder.md).

    from sparring.report import write_report
    md_path, html_path = write_report("runs/digits")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..util import write_atomic
from .analysis import confusion_blocks, latent_figure, matrix_table, norm_figure
from .audit import audit_blocks
from .html import render_html
from .io import Record, Run, load_gallery, load_run
from .markdown import render_markdown
from .plots import accuracy_curve, gallery_grid, image_grid, plot_latent
from .tables import (
    Block,
    Code,
    Facts,
    Figure,
    Heading,
    Paragraph,
    clean_table,
    curve_series,
    detail_table,
    eps_columns,
    eps_label,
    eps_value,
    get,
    group_records,
    lines_of,
    norms_of,
    number,
    robust_table,
    slug,
)

__all__ = ["build_document", "image_grid", "load_run", "plot_latent", "write_report"]

MAX_GALLERIES = 6
MAX_SAMPLES = 8


def write_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write run_dir/report.md (+ figures/*.png) and run_dir/report.html; returns their paths.

    Reads config.toml and manifest.json when present, results.jsonl (required; a broken last
    line is skipped) and the gallery tensors the records name. Raises DataError when the folder
    or results.jsonl is missing. Files are replaced atomically.

    Example:
        >>> md, page = write_report("runs/digits")
        >>> page.name
        'report.html'
    """
    run = load_run(run_dir)
    blocks = build_document(run)
    text, files = render_markdown(blocks)
    for relative, data in files.items():
        write_atomic(run.root / relative, data)
    md_path, html_path = run.root / "report.md", run.root / "report.html"
    write_atomic(md_path, text.encode("utf-8"))
    write_atomic(html_path, render_html(blocks, title=_title(run)).encode("utf-8"))
    return md_path, html_path


def _title(run: Run) -> str:
    name = run.manifest.get("config") or run.config.get("name") or run.root.resolve().name
    return f"sparring report: {name}"


def header_facts(run: Run) -> Facts:
    """Dataset, models, defenses, n, seed, date, versions, device, hashes."""
    m, c, recs = run.manifest, run.config, run.records
    ds = m.get("dataset")
    dataset = get(m, "dataset", "name") or (ds if isinstance(ds, str) else None) or get(c, "data", "name")
    dataset = dataset or next((r.get("dataset") for r in recs if r.get("dataset")), None)
    clean = next((r for r in recs if r.get("kind") == "clean"), {})
    n = get(m, "dataset", "n") or clean.get("n") or get(c, "data", "n")
    seed = m.get("seed", c.get("seed"))
    started = str(m.get("started") or "unknown")
    if isinstance(m.get("resumed"), list) and m["resumed"]:
        started += " (resumed " + ", ".join(map(str, m["resumed"])) + ")"
    names = (("sparring", "sparring"), ("torch", "torch"), ("numpy", "numpy"), ("scikit-learn", "scikit_learn"),
             ("python", "python"))
    versions = ", ".join(f"{label} {m[key]}" for label, key in names if m.get(key)) or "unknown"
    device = str(m.get("device") or c.get("device") or "unknown") + (f" ({m['cuda']})" if m.get("cuda") else "")
    pairs = [("dataset", str(dataset or "unknown")),
             ("model(s)", ", ".join(dict.fromkeys(str(r.get("model") or "model") for r in recs)) or "unknown"),
             ("defense(s)", ", ".join(dict.fromkeys(str(r.get("defense") or "none") for r in recs)) or "unknown"),
             ("n", "unknown" if n is None else str(n)), ("seed", "unknown" if seed is None else str(seed)),
             ("date", started), ("versions", versions), ("device", device),
             ("dataset sha256", short(get(m, "dataset", "sha256"))), ("git sha", short(m.get("git_sha")))]
    if get(m, "model", "weights_sha256"):
        pairs.insert(3, ("weights sha256", short(get(m, "model", "weights_sha256"))))
    if m.get("platform"):
        pairs.append(("platform", str(m["platform"])))
    return Facts(tuple(pairs))


def short(value: object, length: int = 12) -> str:
    return str(value)[:length] if value else "unknown"


def build_document(run: Run) -> list[Block]:
    """The report as renderer-neutral blocks (headings, facts, tables, figures)."""
    groups = group_records(run.records)
    over = str(get(run.config, "evaluate", "over") or "all")
    classes: list[Any] = listed if isinstance(listed := run.manifest.get("classes"), list) else []
    body: list[Block] = []
    if groups:
        body += [Heading("Clean accuracy"), clean_table(groups)]
    else:
        body.append(Paragraph("results.jsonl holds no finished cells yet."))
    if len(groups) > 1:
        body.append(Heading("Attack x defense"))
        body += [matrix_table(groups, norm, over)
                 for norm in dict.fromkeys(n for g in groups.values() for n in norms_of(g))]
    figure = 0
    for (model, defense), group in groups.items():
        body.append(Heading(f"{model} / {defense}"))
        clean = number(group["clean"][-1].get("accuracy")) if group["clean"] else None
        for norm in norms_of(group):
            body += [Heading(f"Robust accuracy, {norm}", 3), robust_table(model, defense, group, norm, over)]
            series = curve_series(group, norm, over)
            if series:
                figure += 1
                columns = eps_columns([r for _, rs, _ in lines_of(group, norm) for r in rs])
                ticks = [(v, lab) for v, lab in columns if v != float("inf")]
                png = accuracy_curve(series, clean_accuracy=None if clean is None or over == "correct" else 100 * clean,
                                     title=f"{model} / {defense}", xlabel=f"eps ({norm})", ticks=ticks)
                body.append(Figure(f"curve-{figure}-{slug(model)}-{slug(defense)}-{slug(norm)}.png", png,
                                   f"Robust accuracy vs eps ({norm}) for {model} / {defense}; dashed: worst case "
                                   "over attacks" + ("" if over == "correct" else "; dotted: clean accuracy") + "."))
        if group["attack"]:
            body += [Heading("Per-cell details", 3), detail_table(model, defense, group)]
            boxes = norm_figure(model, defense, group, len(body))
            if boxes is not None:
                body += [Heading("Perturbation norms", 3), boxes]
            shift = confusion_blocks(model, defense, group, [str(c) for c in classes], len(body))
            if shift:
                body += [Heading("Per-class confusion shift", 3), *shift]
    latent = latent_figure(run)
    if latent is not None:
        body += [Heading("Latent space"), latent]
    audits = audit_blocks(run.records)
    if audits:
        body += [Heading("Audit"), *audits]
    galleries = gallery_figures(run)
    if galleries:
        body += [Heading("Galleries"), *galleries]
    head: list[Block] = [Heading(_title(run), 1), header_facts(run)]
    head += [Paragraph(f"Note: {note}") for note in run.notes]
    tail: list[Block] = [Heading("Configuration"), Code("config.toml", run.config_text)] if run.config_text else []
    return head + body + tail


def pick_galleries(records: list[Record], cap: int = MAX_GALLERIES) -> list[Record]:
    """Up to `cap` records with a gallery, taking turns across attacks, largest eps first."""
    by_attack: dict[tuple[str, ...], list[Record]] = {}
    for r in records:
        if r.get("kind") == "attack" and isinstance(r.get("gallery"), str):
            key = tuple(str(r.get(k)) for k in ("model", "defense", "attack", "norm"))
            by_attack.setdefault(key, []).append(r)
    queues = [sorted(rs, key=eps_value, reverse=True) for rs in by_attack.values()]
    picked: list[Record] = []
    while len(picked) < cap and any(queues):
        for queue in queues:
            if queue and len(picked) < cap:
                picked.append(queue.pop(0))
    return picked


def gallery_figures(run: Run) -> list[Figure]:
    """original / adversarial / difference x10 grids for the picked gallery files."""
    classes: list[Any] = listed if isinstance(listed := run.manifest.get("classes"), list) else []

    def label(values: dict[str, list], key: str, i: int) -> str:
        k = values[key][i] if key in values and i < len(values[key]) else None
        text = "?" if k is None else str(classes[int(k)]) if 0 <= int(k) < len(classes) else str(int(k))
        c = values.get(key.replace("pred", "conf"), [])
        return text + (f" ({100 * float(c[i]):.1f}%)" if key.startswith("pred") and i < len(c) else "")

    figures = []
    for index, r in enumerate(pick_galleries(run.records), 1):
        data = load_gallery(run, r["gallery"])
        if data is None:
            continue
        x, x_adv = data["x"][:MAX_SAMPLES], data["x_adv"][:MAX_SAMPLES]
        norm = str(r.get("norm", "linf")).lower()
        delta = (x_adv.float() - x.float()).flatten(1).abs()
        dist = {"l0": (delta > 1e-6).sum(1), "l1": delta.sum(1), "l2": delta.norm(dim=1)}.get(norm, delta.amax(1))
        norm = norm if norm in ("l0", "l1", "l2") else "linf"
        values = {k: v.flatten().tolist() for k, v in data.items() if k not in ("x", "x_adv") and v.dim() <= 1}
        captions = [(f"true {label(values, 'y', i)}, pred {label(values, 'pred_clean', i)}",
                     f"pred {label(values, 'pred_adv', i)}", f"{norm.capitalize()} {float(dist[i]):.3g}")
                    for i in range(x.shape[0])]
        where = f"{r.get('attack')} ({r.get('norm')}, eps {eps_label(r)}) on {r.get('model')} / {r.get('defense')}"
        png = gallery_grid(x, x_adv, captions, title=where)
        file = f"gallery-{index}-{slug(r.get('attack'))}-{slug(r.get('norm'))}-{slug(eps_label(r))}.png"
        figures.append(Figure(file, png, f"{where}: original (true class, prediction, confidence), adversarial "
                              "(prediction, confidence), difference 0.5 + 10 (x_adv - x)."))
    return figures
