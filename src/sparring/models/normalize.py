"""Normalization as a layer inside the model, and the ``Normalized`` wrapper every builder returns."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InputError

__all__ = ["Normalize", "Normalized"]


def _as_stats(mean: Sequence[float], std: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Check mean/std (same length >= 1, finite, std > 0) and return them as float tuples."""
    mean_t = tuple(float(m) for m in mean)
    std_t = tuple(float(s) for s in std)
    if not mean_t or len(mean_t) != len(std_t):
        raise InputError(f"expected mean and std of the same length >= 1, got {len(mean_t)} and {len(std_t)}")
    if not all(math.isfinite(v) for v in mean_t + std_t) or any(s <= 0 for s in std_t):
        raise InputError(f"expected finite mean and std > 0, got mean {mean_t}, std {std_t}")
    return mean_t, std_t


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std``; a length-1 mean/std applies to every channel.

    mean and std are non-persistent buffers: they follow ``.to(device)`` but are not saved in
    the state dict (the sparring JSON sidecar records them instead).

    Example:
        >>> norm = Normalize((0.5,), (0.25,))
        >>> norm(torch.ones(1, 1, 2, 2)).unique()
        tensor([2.])
    """

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t, std_t = _as_stats(mean, std)
        self.register_buffer("mean", torch.tensor(mean_t).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std_t).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """Normalize a (B, C, H, W) batch."""
        channels = self.mean.shape[1]
        if x.dim() != 4 or (channels != 1 and x.shape[1] != channels):
            raise InputError(f"expected images of shape (B, {channels}, H, W), got {tuple(x.shape)}")
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={tuple(self.mean.flatten().tolist())}, std={tuple(self.std.flatten().tolist())}"


class Normalized(nn.Module):
    """A classifier taking images in [0, 1]: ``forward(x) = net(normalize(x))`` -> logits (B, K).

    ``arch`` and ``arch_kwargs`` name the registered builder and its arguments so that
    ``save_model`` / ``load_model`` can rebuild the exact network; ``mean``/``std`` are tuples.

    Example:
        >>> model = Normalized(nn.Flatten(), (0.0,), (1.0,))
        >>> model(torch.zeros(2, 1, 2, 2)).shape
        torch.Size([2, 4])
    """

    def __init__(
        self,
        net: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        arch: str = "custom",
        arch_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.mean, self.std = _as_stats(mean, std)
        self.normalize = Normalize(self.mean, self.std)
        self.net = net
        self.arch = str(arch)
        self.arch_kwargs: dict[str, Any] = dict(arch_kwargs or {})

    @property
    def num_classes(self) -> int | None:
        """Number of output classes recorded at build time (None for a custom net)."""
        value = self.arch_kwargs.get("num_classes")
        return int(value) if value is not None else None

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, K) for images in [0, 1] of shape (B, C, H, W)."""
        return self.net(self.normalize(x))

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, arch_kwargs={self.arch_kwargs!r}"
