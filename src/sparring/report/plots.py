"""Figures as PNG bytes: accuracy-vs-eps curves, original / adversarial / difference x10 grids, box plots,
confusion matrices, latent scatters, image grids.

The only module of sparring that imports matplotlib, and only when a figure is drawn (``_figure``): reading
a run folder or importing sparring.report costs no matplotlib. It uses the object API (Figure + the Agg
canvas), never pyplot, so no window opens and no global figure state is left behind.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import InputError
from ..util import write_atomic

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["accuracy_curve", "confusion_pair", "difference", "gallery_grid", "image_grid", "latent_scatter",
           "norm_boxes", "plot_latent", "to_display"]

DIFF_GAIN = 10.0
MARKERS = "osD^vP*Xh<>"


def _text(value: object) -> str:
    """Data text for matplotlib: '$' would start mathtext, so it is escaped."""
    return str(value).replace("$", r"\$")


def _figure(**kwargs: Any) -> Figure:
    """A matplotlib Figure on the Agg canvas (matplotlib is imported here, at the first figure)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure, dpi: int) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    fig.clear()
    return buf.getvalue()


def accuracy_curve(series: Sequence[tuple[str, Sequence[float], Sequence[float], bool]], *,
                   clean_accuracy: float | None, title: str, xlabel: str,
                   ticks: Sequence[tuple[float, str]] = ()) -> bytes:
    """Robust accuracy (%) against eps, one line per series (label, eps, accuracy %, dashed).

    Example:
        >>> png = accuracy_curve([("pgd", [0.1, 0.2], [40.0, 5.0], False)], clean_accuracy=97.0,
        ...                      title="digits-cnn", xlabel="eps (linf)")
    """
    fig = _figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.add_subplot()
    xs = [x for _, e, _, _ in series for x in e]
    for i, (label, eps, acc, dashed) in enumerate(series):
        ax.plot(eps, acc, linestyle="--" if dashed else "-", marker=MARKERS[i % len(MARKERS)],
                color="black" if dashed else f"C{i % 10}", linewidth=2 if dashed else 1.6, label=_text(label))
    if clean_accuracy is not None:
        ax.axhline(clean_accuracy, color="grey", linestyle=":", linewidth=1.2,
                   label=f"clean ({clean_accuracy:.2f}%)")
    positive = [x for x in xs if x > 0]
    if positive and len(positive) == len(xs) and max(positive) / min(positive) >= 30:
        ax.set_xscale("log")
    if ticks and len(ticks) <= 12:
        ax.set_xticks([t for t, _ in ticks], [_text(lab) for _, lab in ticks], minor=False)
        ax.minorticks_off()
        if len(ticks) > 6:
            ax.tick_params(axis="x", labelrotation=45)
    ax.set_ylim(-3, 103)
    ax.set_xlabel(_text(xlabel))
    ax.set_ylabel("robust accuracy (%)")
    ax.set_title(_text(title), fontsize=11)
    ax.grid(True, alpha=0.3)
    if series or clean_accuracy is not None:
        ax.legend(fontsize=8, loc="best", framealpha=0.85)
    return _png(fig, dpi=110)


def to_display(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] -> an array for imshow: (H, W) for one channel, (H, W, 3) for three.

    Other channel counts show their first channel; values above 1.5 are taken as 0..255.
    """
    a = x.detach().float().cpu().numpy()
    if a.size and np.nanmax(a) > 1.5:
        a = a / 255.0
    a = np.clip(np.nan_to_num(a), 0.0, 1.0)
    return a.transpose(1, 2, 0) if a.shape[0] == 3 else a[0]


def difference(x: torch.Tensor, x_adv: torch.Tensor, gain: float = DIFF_GAIN) -> torch.Tensor:
    """0.5 + gain * (x_adv - x), clipped to [0, 1]: grey where unchanged."""
    scale = 255.0 if float(torch.nan_to_num(x).max()) > 1.5 else 1.0
    return (0.5 + gain * (x_adv.float() - x.float()) / scale).clamp(0.0, 1.0)


def gallery_grid(x: torch.Tensor, x_adv: torch.Tensor, captions: Sequence[tuple[str, str, str]], *,
                 title: str) -> bytes:
    """A grid with one row per sample and columns original / adversarial / difference x10.

    x, x_adv: (N, C, H, W); captions: (original, adversarial, difference) text per row.
    Example:
        >>> png = gallery_grid(x[:4], x_adv[:4], [("3 (99%)", "8 (97%)", "Linf 0.1")] * 4, title="pgd")
    """
    n = x.shape[0]
    gray = x.shape[1] != 3
    cell = 1.7 if max(x.shape[2:]) < 48 else 2.2
    fig = _figure(figsize=(3 * cell, n * (cell + 0.25) + 0.45), layout="constrained")
    axes = fig.subplots(n, 3, squeeze=False)
    heads = ("original", "adversarial", f"difference x{DIFF_GAIN:g}")
    for i in range(n):
        images = (x[i], x_adv[i], difference(x[i], x_adv[i]))
        for j, (ax, image) in enumerate(zip(axes[i], images)):
            shown = to_display(image)
            ax.imshow(shown, cmap="gray" if gray else None, vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(_text(captions[i][j]) if i < len(captions) else "", fontsize=8)
            if i == 0:
                ax.set_title(heads[j], fontsize=10, fontweight="bold")
    fig.suptitle(_text(title), fontsize=10)
    return _png(fig, dpi=90)


def latent_scatter(views: Sequence[dict], titles: Sequence[str]) -> bytes:
    """One panel per latent view ({"clean": (N, 2), "adversarial": (N, 2) or None, "labels": (N,)}): clean
    points as dots, attacked ones as crosses, both coloured by the true class (seeds/001, Fig. 8)."""
    fig = _figure(figsize=(4.2 * len(views), 4.0), layout="constrained")
    for i, v in enumerate(views):
        ax, colors = fig.add_subplot(1, len(views), i + 1), [f"C{int(k) % 10}" for k in v["labels"]]
        clean, adv = np.asarray(v["clean"]), v.get("adversarial")
        ax.scatter(clean[:, 0], clean[:, 1], c=colors, s=8, label="clean")
        if adv is not None:
            adv = np.asarray(adv)
            ax.scatter(adv[:, 0], adv[:, 1], c=colors, s=14, marker="x", label="attacked")
            ax.legend(loc="best", fontsize=8)
        ax.set_title(_text(titles[i] if i < len(titles) else ""), fontsize=10)
    return _png(fig, dpi=100)


def norm_boxes(boxes: Sequence[tuple[str, dict]], *, title: str, ylabel: str) -> bytes:
    """Box plots drawn from stored percentiles: whiskers p10-p90, box p25-p75, line at the median,
    one box per (label, summary) with the summary keys p10, p25, median, p75, p90."""
    fig = _figure(figsize=(max(4.0, 0.55 * len(boxes) + 1.5), 3.8), layout="constrained")
    ax = fig.add_subplot()
    stats = [{"label": _text(label), "whislo": s["p10"], "q1": s["p25"], "med": s["median"], "q3": s["p75"],
              "whishi": s["p90"], "fliers": []} for label, s in boxes]
    ax.bxp(stats, showfliers=False)
    ax.set_ylabel(_text(ylabel))
    ax.set_title(_text(title), fontsize=10)
    ax.tick_params(axis="x", labelrotation=60, labelsize=7)
    ax.grid(True, axis="y", alpha=0.3)
    return _png(fig, dpi=100)


def confusion_pair(clean: np.ndarray, adversarial: np.ndarray, classes: Sequence[str], *,
                   titles: Sequence[str]) -> bytes:
    """Two row-normalised confusion matrices (rows: true class, columns: predicted, %) side by side."""
    k = len(classes)
    size = max(3.2, 0.32 * k + 1.6)
    fig = _figure(figsize=(2 * size, size), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, counts, title in zip(axes, (clean, adversarial), titles):
        rows = counts.sum(axis=1, keepdims=True)
        share = np.divide(100.0 * counts, rows, out=np.zeros(counts.shape, dtype=float), where=rows > 0)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=100)
        if k <= 12:
            for i in range(k):
                for j in range(k):
                    if share[i, j] >= 0.5:
                        ax.text(j, i, f"{share[i, j]:.0f}", ha="center", va="center", fontsize=6,
                                color="white" if share[i, j] > 60 else "black")
        names = [_text(c)[:10] for c in classes]
        ax.set_xticks(range(k), names, rotation=90, fontsize=7)
        ax.set_yticks(range(k), names, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(_text(title), fontsize=9)
    return _png(fig, dpi=100)


def plot_latent(view: dict[str, Any] | Sequence[dict[str, Any]], path: str | Path, *,
                titles: Sequence[str] | None = None) -> Path:
    """Scatter plots of sparring.defenses.latent_view results (seeds/001, Fig. 8), one panel each, to a PNG
    written atomically. Clean points are dots, attacked points crosses, both coloured by the true label.
        >>> plot_latent([latent_view(plain, "5", x, y), latent_view(model, "5", x, y)], "fig8.png",
        ...             titles=["cross-entropy", "contrastive"])
    """
    views = [view] if isinstance(view, dict) else list(view)
    if not views or not all(isinstance(v, dict) and {"clean", "labels"} <= set(v) for v in views):
        raise InputError("expected a latent_view dict or a non-empty list of them, got " + type(view).__name__)
    names = [titles[i] if titles is not None and i < len(titles) else f"{v.get('method', '')} {v.get('layer', '')}"
             for i, v in enumerate(views)]
    path = Path(os.fspath(path))
    write_atomic(path, latent_scatter(views, names))
    return path


def image_grid(images: torch.Tensor, titles: Sequence[str], *, columns: int = 10) -> bytes:
    """Images (N, C, H, W) in [0, 1] in a grid, one title under each (the fooling images' figure)."""
    cols = min(len(titles), columns)
    rows = (len(titles) + cols - 1) // cols
    fig = _figure(figsize=(1.4 * cols, 1.6 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, title in zip(axes.flat, images, titles):
        pic = img.detach().cpu().permute(1, 2, 0).numpy()
        ax.imshow(pic[..., 0] if pic.shape[2] == 1 else pic, cmap="gray" if pic.shape[2] == 1 else None,
                  vmin=0, vmax=1)
        ax.set_title(_text(title), fontsize=7)
    return _png(fig, dpi=100)
