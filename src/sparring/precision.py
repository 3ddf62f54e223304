"""Precision of training and attacks: autocast for the opt-in reduced precisions, exact float32 on a GPU.

Training takes its speed opt-ins from its settings (sparring.config.TrainSettings: precision,
channels_last, compile): `autocast` below is what a "bf16" / "fp16" precision runs under.

Attacks run in float32 unless asked: the runner's `precision` opt-in wraps them in `autocast`, and the
audit notes it (reduced-precision gradients can understate an attack). On a GPU, float32 means IEEE
float32 there too: `exact_float32` turns off TF32 (on by default for cuDNN convolutions) and picks
deterministic cuDNN kernels while attacks run, so results match the CPU to rounding and repeat exactly.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import torch

from .errors import InputError

__all__ = ["PRECISIONS", "autocast", "check_precision", "exact_float32", "with_exact_float32"]

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
F = TypeVar("F", bound=Callable[..., Any])


def check_precision(name: object) -> str:
    if name not in PRECISIONS:
        raise InputError(f"expected precision fp32, bf16 or fp16, got {name!r}")
    return str(name)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """torch.autocast on the device's type for bf16 / fp16; nothing for fp32."""
    dtype = PRECISIONS[check_precision(precision)]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def _tf32_switches() -> list[tuple[object, str, object]]:
    """(object, attribute, IEEE-float32 value) for cuDNN convolutions and cuBLAS matrix products: the
    fp32_precision settings where torch has them, else the older allow_tf32 flags."""
    conv, matmul = getattr(torch.backends.cudnn, "conv", None), torch.backends.cuda.matmul
    if conv is not None and hasattr(conv, "fp32_precision") and hasattr(matmul, "fp32_precision"):
        return [(conv, "fp32_precision", "ieee"), (matmul, "fp32_precision", "ieee")]
    return [(torch.backends.cudnn, "allow_tf32", False), (matmul, "allow_tf32", False)]


@contextlib.contextmanager
def exact_float32(device: torch.device | str) -> Iterator[None]:
    """On CUDA: IEEE float32 (no TF32, whose 10-bit mantissa moves minimal attacks such as DeepFool by
    several percent of samples against the CPU) and deterministic cuDNN kernels (a rerun or a torchrun job
    repeats every per-sample result) within the block; the previous settings come back after. Nothing on
    other devices."""
    if torch.device(device).type != "cuda":
        yield
        return
    switches = [*_tf32_switches(), (torch.backends.cudnn, "deterministic", True),
                (torch.backends.cudnn, "benchmark", False)]
    saved = [getattr(obj, name) for obj, name, _ in switches]
    try:
        for obj, name, value in switches:
            setattr(obj, name, value)
        yield
    finally:
        for (obj, name, _), value in zip(switches, saved):
            setattr(obj, name, value)


def with_exact_float32(fn: F) -> F:
    """Decorator: ``fn(model, x, ...)`` runs within ``exact_float32(x.device)``."""

    @functools.wraps(fn)
    def run(model: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        with exact_float32(x.device):
            return fn(model, x, *args, **kwargs)

    return cast(F, run)
