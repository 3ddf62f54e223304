"""The report's analyses beyond the tables: the attack x defense x eps matrix (Table 2 of the seed
report), perturbation-norm distributions, per-class confusion shifts and the latent-space plot."""

from __future__ import annotations

import numpy as np

from .io import Record, Run, load_tensors
from .plots import confusion_pair, latent_scatter, norm_boxes
from .tables import (
    Figure,
    Paragraph,
    Table,
    eps_columns,
    eps_label,
    eps_value,
    lines_of,
    number,
    over_text,
    pct,
    robust_value,
    slug,
)

Group = dict[str, list[Record]]


def matrix_table(groups: dict[tuple[str, str], Group], norm: str, over: str) -> Table:
    """Rows = (attack, model / defense), columns = eps: the seed report's Table 2 layout."""
    every = [r for g in groups.values() for _, rs, _ in lines_of(g, norm) for r in rs]
    columns = [label for _, label in eps_columns(every)]
    names = list(dict.fromkeys(name for g in groups.values() for name, _, _ in lines_of(g, norm)))
    rows = []
    for name in names:
        for (model, defense), g in groups.items():
            recs = next((rs for n, rs, _ in lines_of(g, norm) if n == name), None)
            if recs is None:
                continue
            cells = {eps_label(r): robust_value(r, g, over) for r in recs}
            rows.append((name, f"{model} / {defense}", *(pct(cells.get(c)) for c in columns)))
    return Table(("attack", "model / defense", *columns), tuple(rows),
                 f"Robust accuracy (%) under {norm} attacks, attack x defense x eps, over {over_text(over)}.")


def norm_figure(model: str, defense: str, group: Group, index: int) -> Figure | None:
    """Box plots of the L2 size of each cell's successful perturbations (p10 / p25 / median / p75 / p90)."""
    boxes = []
    for r in sorted(group["attack"], key=lambda r: (str(r.get("norm")), str(r.get("attack")), eps_value(r))):
        s = (r.get("norms") or {}).get("l2")
        if isinstance(s, dict) and all(number(s.get(k)) is not None for k in ("p10", "p25", "median", "p75", "p90")):
            boxes.append((f"{r.get('attack')} {r.get('norm')} {eps_label(r)}", s))
    if not boxes:
        return None
    png = norm_boxes(boxes, title=f"{model} / {defense}", ylabel="L2 norm of x_adv - x")
    return Figure(f"norms-{index}-{slug(model)}-{slug(defense)}.png", png,
                  f"Perturbation-norm distributions for {model} / {defense}: the L2 size of each cell's successful "
                  "perturbations (box p25-p75, line at the median, whiskers p10-p90).")


def shift_cell(group: Group) -> Record | None:
    """The attack cell whose robust accuracy is nearest half the clean accuracy: where the confusion moves
    the most visibly (neither untouched nor all collapsed)."""
    clean = group["clean"][-1] if group["clean"] else {}
    acc = number(clean.get("accuracy"))
    cells = [r for r in group["attack"] if isinstance(r.get("confusion"), list) and not r.get("targeted")]
    if acc is None or not cells or not isinstance(clean.get("confusion"), list):
        return None
    return min(cells, key=lambda r: (abs((number(r.get("robust_accuracy")) or 0.0) - acc / 2), eps_value(r)))


def confusion_blocks(model: str, defense: str, group: Group, classes: list[str], index: int) -> list:
    """Per-class clean vs robust accuracy and the two confusion matrices for the cell picked by shift_cell."""
    cell = shift_cell(group)
    if cell is None:
        return []
    clean = np.asarray(group["clean"][-1]["confusion"], dtype=np.int64)
    adv = np.asarray(cell["confusion"], dtype=np.int64)
    k = clean.shape[0]
    if clean.shape != (k, k) or adv.shape != (k, k):
        return [Paragraph(f"The confusion counts of {model} / {defense} are malformed; skipped.")]
    names = [str(classes[i]) if i < len(classes) else str(i) for i in range(k)]
    total = clean.sum(axis=1)
    where = f"{cell.get('attack')} ({cell.get('norm')}, eps {eps_label(cell)})"
    rows = []
    for i in range(k):
        off = adv[i].copy()
        off[i] = 0
        top = int(off.argmax())
        rows.append((names[i], str(int(total[i])), pct(clean[i, i] / total[i] if total[i] else None),
                     pct(adv[i, i] / total[i] if total[i] else None),
                     f"{names[top]} ({int(off[top])})" if off[top] else "—"))
    table = Table(("class", "n", "clean accuracy (%)", f"robust accuracy under {where} (%)", "most taken to (count)"),
                  tuple(rows), f"Per-class confusion shift of {model} / {defense} under {where}.")
    png = confusion_pair(clean, adv, names, titles=("clean (all samples)", f"{where} (attacked samples)"))
    caption = (f"Confusion matrices of {model} / {defense}, rows normalised (%): clean on all samples, and under "
               f"{where} on the samples that were correct (predictions on perturbations within eps).")
    return [table, Figure(f"confusion-{index}-{slug(model)}-{slug(defense)}.png", png, caption)]


def latent_figure(run: Run) -> Figure | None:
    """The latent-space plot over every unit with a latent record (one panel each)."""
    views, titles, where = [], [], ""
    for r in run.records:
        if r.get("kind") != "latent" or not isinstance(r.get("file"), str):
            continue
        data = load_tensors(run, r["file"], ("clean", "adversarial", "labels"), "latent coordinates")
        if data is None or data["clean"].dim() != 2 or data["clean"].shape[1] != 2:
            continue
        views.append({k: v.numpy() for k, v in data.items()})
        titles.append(f"{r.get('model')} / {r.get('defense')}")
        where = f"{r.get('attack')} ({r.get('norm')}, eps {eps_label(r)})"
    if not views:
        return None
    return Figure("latent.png", latent_scatter(views, titles),
                  f"Latent space (PCA of the 1-NN layer, or the input of the last linear layer) of the first "
                  f"evaluated images: dots clean, crosses attacked by {where}, colour the true class (the seed "
                  "report's Fig. 8).")
