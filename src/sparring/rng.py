"""Randomness keyed by sample, so results never depend on batch size, shard or resume point.

An attack takes `generator`: either a torch.Generator (one stream for the whole batch, the
simple library use) or a SampleGenerators (one stream per sample, derived from (seed, sample
index)); the runner passes the latter. The helpers below draw from either.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

_MIX = 0x9E3779B97F4A7C15


class SampleGenerators:
    """One torch.Generator per sample, seeded from (seed, index).

    Example:
        >>> g = SampleGenerators(seed=0, indices=range(100, 164))
        >>> noise = uniform(g, x)  # row i depends only on (0, 100 + i)
    """

    def __init__(self, seed: int, indices: Sequence[int] | Tensor) -> None:
        self.seed = int(seed)
        self.indices = [int(i) for i in indices]
        self.streams = [torch.Generator().manual_seed(self._key(i)) for i in self.indices]

    def _key(self, index: int) -> int:
        return (self.seed * _MIX + (index + 1) * 0xBF58476D1CE4E5B9) % (2**63 - 1)

    def __len__(self) -> int:
        return len(self.indices)

    def subset(self, mask: Tensor) -> "SampleGenerators":
        """The generators of the samples where mask is True (streams shared, not copied)."""
        sub = SampleGenerators.__new__(SampleGenerators)
        sub.seed = self.seed
        keep = mask.nonzero().flatten().tolist()
        sub.indices = [self.indices[i] for i in keep]
        sub.streams = [self.streams[i] for i in keep]
        return sub


Generators = torch.Generator | SampleGenerators | None


def _draw(generator: Generators, like: Tensor, fn: str) -> Tensor:
    shape = like.shape
    if isinstance(generator, SampleGenerators):
        if len(generator) != shape[0]:
            raise ValueError(f"expected {shape[0]} sample generators, got {len(generator)}")
        draw = getattr(torch, fn)
        rows = [draw(tuple(shape[1:]), generator=g) for g in generator.streams]
        out = torch.stack(rows) if rows else torch.empty(shape)
    else:
        gen = generator
        device = like.device if gen is None else gen.device
        out = getattr(torch, fn)(tuple(shape), generator=gen, device=device)
    return out.to(device=like.device, dtype=like.dtype)


def uniform(generator: Generators, like: Tensor) -> Tensor:
    """U[0, 1) noise shaped like `like`."""
    return _draw(generator, like, "rand")


def normal(generator: Generators, like: Tensor) -> Tensor:
    """N(0, 1) noise shaped like `like`."""
    return _draw(generator, like, "randn")


def subset(generator: Generators, mask: Tensor) -> Generators:
    """Generators for the rows selected by a boolean mask."""
    if isinstance(generator, SampleGenerators):
        return generator.subset(mask)
    return generator
