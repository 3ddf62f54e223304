"""Randomness keyed by sample, so results never depend on batch size, shard or resume point.

An attack takes `generator`: either a torch.Generator (one stream for the whole batch, the
simple library use) or a SampleGenerators (one stream per sample, derived from (seed, sample
index)); the runner passes the latter. The helpers below draw from either.

Per-sample streams are counter-based (SplitMix64, Steele et al. 2014, "Fast splittable
pseudorandom number generators"): value k of sample i is a 64-bit hash of (key_i, k), computed
for the whole batch at once on the device of the tensor asked for. One draw for 500 samples is
a handful of element-wise kernels, not 500 generator calls, which matters on a GPU and for
attacks that draw a few numbers per sample per query (Square).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch import Tensor

_U64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB


def _signed(value: int) -> int:
    """A uint64 as the int64 with the same bits (torch has no uint64 arithmetic)."""
    value &= _U64
    return value - (1 << 64) if value >> 63 else value


def _mix_int(z: int) -> int:
    """SplitMix64's finalizer on a Python int (exact, for keys and for checking the tensor path)."""
    z &= _U64
    z = ((z ^ (z >> 30)) * _M1) & _U64
    z = ((z ^ (z >> 27)) * _M2) & _U64
    return z ^ (z >> 31)


def _shr(z: Tensor, s: int) -> Tensor:
    """Logical right shift of int64 bits (torch's >> is arithmetic)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def _mix(z: Tensor) -> Tensor:
    """SplitMix64's finalizer on int64 tensors (multiplication wraps modulo 2**64)."""
    z = (z ^ _shr(z, 30)) * _signed(_M1)
    z = (z ^ _shr(z, 27)) * _signed(_M2)
    return z ^ _shr(z, 31)


def derive(seed: int, *purpose: int | str) -> int:
    """A seed for one purpose of a run, from the run's seed: a 63-bit hash of (seed, *purpose).

    Every stream of randomness that is not the attack's own takes its seed from here, with a purpose that
    names it ("audit", "square"; "targets"; "train", epoch), so two purposes never share a stream by an
    accident of arithmetic (seed + 7919 for one, seed + 7919 * r for another). Strings hash by their UTF-8
    bytes (blake2b), integers by value: the same on every machine and every run.
        >>> derive(0, "targets") != derive(0, "audit", 1)
        True
    """
    key = _mix_int(int(seed) * _GOLDEN + _M1)
    for part in purpose:
        value = int.from_bytes(hashlib.blake2b(part.encode(), digest_size=8).digest(), "little") \
            if isinstance(part, str) else int(part)
        key = _mix_int(key ^ _mix_int(value + _GOLDEN))
    return key & ((1 << 63) - 1)


def epoch_key(seed: int, epoch: int) -> int:
    """The seed of training epoch `epoch`'s randomness: the loop's shuffle and augmentation, and the per-sample
    streams of the recipes that draw in their loss (adversarial training, contrastive positives).

    (seed * golden + epoch * m1) mod (2**63 - 1), the formula sparring has trained with from the start: a
    model trained by an earlier version retrains the same, and a training state it saved resumes as it would
    have. New streams take ``derive(seed, purpose)``.
        >>> epoch_key(0, 1) != epoch_key(0, 2)
        True
    """
    return (int(seed) * _GOLDEN + int(epoch) * _M1) % (2**63 - 1)


#: The salt of the global-RNG seed inside a training epoch (Dropout) and of the overfitting check's streams,
#: XORed onto their keys (as from the start, see epoch_key).
LOCAL_SALT = 0x5DEECE66D


def splitmix64(key: int, count: int) -> list[int]:
    """The first `count` outputs of SplitMix64 seeded with `key`, in pure Python (reference)."""
    return [_mix_int(key + (k + 1) * _GOLDEN) for k in range(count)]


class _Streams:
    """Keys and draw counters of a batch of samples; shared by every subset of it.

    They move to the device of the first draw and stay there, so a draw needs no host copy.
    """

    def __init__(self, keys: Tensor) -> None:
        self.keys = keys
        self.counts = torch.zeros_like(keys)

    def on(self, device: torch.device) -> None:
        if self.keys.device != device:
            self.keys, self.counts = self.keys.to(device), self.counts.to(device)


class SampleGenerators:
    """One random stream per sample, keyed by (seed, index); subsets share the streams.

    Example:
        >>> g = SampleGenerators(seed=0, indices=range(100, 164))
        >>> noise = uniform(g, x)  # row i depends only on (0, 100 + i) and on what row i drew before
    """

    def __init__(self, seed: int, indices: Sequence[int] | Tensor) -> None:
        self.seed = int(seed)
        index = [int(i) for i in indices]
        keys = [_signed(_mix_int(self.seed * _GOLDEN + (i + 1) * _M1)) for i in index]
        self._index = torch.tensor(index, dtype=torch.int64)
        self._streams = _Streams(torch.tensor(keys, dtype=torch.int64))
        self._rows = torch.arange(len(index))

    @property
    def indices(self) -> list[int]:
        """The sample indices, in row order."""
        return self._index.tolist()

    def __len__(self) -> int:
        return self._index.numel()

    def subset(self, mask: Tensor) -> SampleGenerators:
        """The generators of the samples where mask is True (streams shared, not copied)."""
        sub = SampleGenerators.__new__(SampleGenerators)
        sub.seed = self.seed
        keep = mask.detach().to("cpu", torch.bool)
        sub._index, sub._streams = self._index[keep], self._streams
        sub._rows = self._rows[keep.to(self._rows.device)]
        return sub

    def tiled(self, times: int, purpose: str) -> SampleGenerators:
        """Fresh streams for `times` stacked copies of these rows (copy k in rows k*n..k*n+n-1).

        Copy k of sample i is keyed by (derive(seed, purpose, k), i): the copies draw independently
        of each other and of this generator, and still only by sample, never by batch.
        """
        out = SampleGenerators.__new__(SampleGenerators)
        out.seed = self.seed
        copies = [SampleGenerators(derive(self.seed, purpose, k), self._index) for k in range(times)]
        out._index = self._index.repeat(times)
        out._streams = _Streams(torch.cat([c._streams.keys for c in copies]))
        out._rows = torch.arange(out._index.numel())
        return out

    def bits(self, per_row: int, device: torch.device | str = "cpu") -> Tensor:
        """The next `per_row` 64-bit values of each stream, as int64 of shape (len(self), per_row)."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        streams = self._streams
        streams.on(device)
        if self._rows.device != device:
            self._rows = self._rows.to(device)
        rows = self._rows
        base = streams.counts[rows]
        streams.counts[rows] = base + per_row
        counter = base[:, None] + torch.arange(1, per_row + 1, device=device)
        return _mix(streams.keys[rows][:, None] + counter * _signed(_GOLDEN))


Generators = torch.Generator | SampleGenerators | None


def _unit(bits: Tensor, dtype: torch.dtype) -> Tensor:
    """Uniform [0, 1) from 64-bit values: 53 bits for float64, 24 otherwise."""
    if dtype == torch.float64:
        return _shr(bits, 11).to(torch.float64) * 2.0**-53
    return _shr(bits, 40).to(torch.float32) * 2.0**-24


def _draw(generator: Generators, like: Tensor, fn: str) -> Tensor:
    shape = like.shape
    if isinstance(generator, SampleGenerators):
        if len(generator) != shape[0]:
            raise ValueError(f"expected {shape[0]} sample generators, got {len(generator)}")
        per_row = 1
        for size in shape[1:]:
            per_row *= int(size)
        work = torch.float64 if like.dtype == torch.float64 else torch.float32
        if fn == "rand":
            out = _unit(generator.bits(per_row, like.device), work)
        else:  # Box-Muller: two uniforms per normal; 1 - u lies in (0, 1], so the log is finite
            u = _unit(generator.bits(2 * per_row, like.device), work)
            u1, u2 = 1 - u[:, :per_row], u[:, per_row:]
            out = torch.sqrt(-2 * torch.log(u1)) * torch.cos(2 * torch.pi * u2)
        out = out.reshape(shape)
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


def integers(generator: Generators, low: int, high: int, n: int, device: torch.device | str = "cpu") -> Tensor:
    """n integers uniform in [low, high), one per sample (int64)."""
    u = uniform(generator, torch.empty(n, dtype=torch.float64, device=device))
    return (low + (u * (high - low)).floor().to(torch.int64)).clamp_(max=high - 1)


def tile(generator: Generators, times: int, purpose: str) -> Generators:
    """Generators for `times` stacked copies of a batch (SampleGenerators.tiled); a shared
    torch.Generator (or None) simply serves the bigger batch."""
    if isinstance(generator, SampleGenerators):
        return generator.tiled(times, purpose)
    return generator


def subset(generator: Generators, mask: Tensor) -> Generators:
    """Generators for the rows selected by a boolean mask."""
    if isinstance(generator, SampleGenerators):
        return generator.subset(mask)
    return generator
