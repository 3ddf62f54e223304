"""Batch augmentations for training (random crop with zero padding, horizontal flip).

Vectorised over the batch and driven by an explicit torch.Generator.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from ..registry import Registry

__all__ = ["AUGMENTATIONS", "augment_batch"]


def _crop(x: Tensor, generator: torch.Generator, pad: int) -> Tensor:
    """Random crop after zero padding by ``pad``: one offset per sample, one gather per batch."""
    if pad == 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy, dx = (torch.randint(0, 2 * pad + 1, (2, b), generator=generator)).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    return padded[batch, torch.arange(c, device=x.device)[None, :, None, None], rows, cols]


def _flip(x: Tensor, generator: torch.Generator) -> Tensor:
    """Horizontal flip of each sample with probability 1/2."""
    flip = (torch.rand(x.shape[0], generator=generator) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


#: fn(x, generator, pad) -> augmented batch (same shape, values stay in [0, 1])
AUGMENTATIONS: Registry[Callable[[Tensor, torch.Generator, int], Tensor]] = Registry("augmentation")
AUGMENTATIONS.register("none", description="no augmentation")(lambda x, g, pad: x)
AUGMENTATIONS.register("crop", description="random crop with zero padding")(_crop)
AUGMENTATIONS.register("crop-flip", description="random crop with zero padding + horizontal flip")(
    lambda x, g, pad: _flip(_crop(x, g, pad), g)
)


def augment_batch(x: Tensor, kind: str, *, generator: torch.Generator, pad: int = 4) -> Tensor:
    """Apply a registered augmentation ("none", "crop", "crop-flip") to a (B, C, H, W) batch.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> augment_batch(torch.rand(8, 3, 32, 32), "crop-flip", generator=g).shape
        torch.Size([8, 3, 32, 32])
    """
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise InputError(f"expected pad to be an integer >= 0, got {pad!r}")
    return AUGMENTATIONS.get(kind)(x, generator, pad)
