"""Per-sample metrics: perturbation norms, confidence, and summaries for records."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

L0_TOLERANCE = 1e-6


def perturbation_norms(x_adv: Tensor, x: Tensor) -> dict[str, Tensor]:
    """Per-sample L0 (coordinates changed by more than 1e-6), L1, L2 and Linf of x_adv - x."""
    delta = (x_adv - x).flatten(1).double()
    return {
        "l0": (delta.abs() > L0_TOLERANCE).sum(dim=1).double(),
        "l1": delta.abs().sum(dim=1),
        "l2": delta.norm(p=2, dim=1),
        "linf": delta.abs().amax(dim=1),
    }


def summarize(values: Tensor) -> dict[str, float] | None:
    """Mean, median, min, max and the 10/25/75/90th percentiles (the report's box plots) of a 1-D
    tensor; None when empty."""
    if values.numel() == 0:
        return None
    v = values.double()
    q = torch.quantile(v, torch.tensor([0.1, 0.25, 0.75, 0.9], dtype=torch.float64)).tolist()
    return {"mean": float(v.mean()), "median": float(v.median()), "min": float(v.min()), "max": float(v.max()),
            "p10": q[0], "p25": q[1], "p75": q[2], "p90": q[3]}


MAX_CONFUSION_CLASSES = 20


def confusion(y: Tensor, pred: Tensor, k: int) -> list[list[int]] | None:
    """k x k counts, rows = true class, columns = predicted; None above MAX_CONFUSION_CLASSES classes."""
    if k > MAX_CONFUSION_CLASSES:
        return None
    counts = torch.bincount(y.long() * k + pred.long(), minlength=k * k).view(k, k)
    return counts.tolist()


def confidence(logits: Tensor) -> tuple[Tensor, Tensor]:
    """(predicted class, softmax probability of that class) per sample."""
    probs = torch.softmax(logits.double(), dim=1)
    conf, pred = probs.max(dim=1)
    return pred, conf.float()


def pack_mask(mask: Tensor) -> str:
    """A boolean vector as hex of packed bits (compact per-sample flags in results.jsonl)."""
    return np.packbits(mask.cpu().numpy().astype(np.uint8)).tobytes().hex()


def unpack_mask(text: str, n: int) -> Tensor:
    """Inverse of pack_mask."""
    bits = np.unpackbits(np.frombuffer(bytes.fromhex(text), dtype=np.uint8))[:n]
    return torch.from_numpy(bits.astype(bool))


def rate(count: int, total: int) -> float | None:
    """count / total, None when total is 0."""
    return count / total if total else None


def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
