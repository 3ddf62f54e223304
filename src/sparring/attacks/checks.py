"""Validation at the attack boundary: typed one-line errors, never assert."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import InputError
from ..threat import ThreatModel


def check_batch(x: Tensor, y: Tensor, threat: ThreatModel) -> None:
    """x: float (B, ...) within bounds, no NaN; y: int64 (B,)."""
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise InputError(f"expected tensors x and y, got {type(x).__name__} and {type(y).__name__}")
    if not x.is_floating_point():
        raise InputError(f"expected a floating-point image batch, got dtype {x.dtype}")
    if x.dim() < 2 or x.shape[0] == 0:
        raise InputError(f"expected a non-empty batch of shape (B, C, H, W), got {tuple(x.shape)}")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise InputError(f"expected labels of shape ({x.shape[0]},), got {tuple(y.shape)}")
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise InputError(f"expected integer labels, got dtype {y.dtype}")
    if torch.isnan(x).any():
        raise InputError("expected finite inputs, got NaN values in x")
    lo, hi = threat.bounds
    below, above = float(x.min()), float(x.max())
    if below < lo - 1e-6 or above > hi + 1e-6:
        raise InputError(f"expected inputs within bounds [{lo}, {hi}], got values in [{below:.4g}, {above:.4g}]")


def check_labels(y: Tensor, num_classes: int) -> None:
    """Labels must index the model's classes."""
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise InputError(f"expected labels in [0, {num_classes - 1}], got values in [{int(y.min())}, {int(y.max())}]")


def check_positive_int(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_positive(name: str, value: float, allow_zero: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if math.isnan(number) or number < 0 or (number == 0 and not allow_zero) or math.isinf(number):
        bound = ">= 0" if allow_zero else "> 0"
        raise InputError(f"{name} must be a finite number {bound}, got {value!r}")
    return number
