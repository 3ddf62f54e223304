"""Speed opt-ins for training (and, separately, attacks): mixed precision, channels_last, torch.compile.

Training reads them from a context, so every recipe (plain, adversarial, distillation, contrastive,
smoothing) gets them without new parameters:

    with training_options(precision="bf16", channels_last=True):
        train(model, x, y, ...)

Attacks run in float32 unless asked: the runner's `precision` opt-in wraps them in `autocast`, and the
audit notes it (reduced-precision gradients can understate an attack). On a GPU, float32 means IEEE
float32 there too: `exact_float32` turns off TF32 (on by default for cuDNN convolutions) and picks
deterministic cuDNN kernels while attacks run, so results match the CPU to rounding and repeat exactly.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import torch

from .errors import InputError

__all__ = ["PRECISIONS", "TrainingOptions", "autocast", "check_precision", "current_options", "exact_float32",
           "training_options", "with_exact_float32"]

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class TrainingOptions:
    precision: str = "fp32"  # fp32, or autocast to bf16 / fp16 (fp16 with a gradient scaler)
    channels_last: bool = False  # model and batches in channels_last memory format
    compile: bool = False  # torch.compile the model for the training steps


_OPTIONS: ContextVar[TrainingOptions] = ContextVar("sparring_training_options", default=TrainingOptions())


def check_precision(name: object) -> str:
    if name not in PRECISIONS:
        raise InputError(f"expected precision fp32, bf16 or fp16, got {name!r}")
    return str(name)


@contextlib.contextmanager
def training_options(*, precision: str = "fp32", channels_last: bool = False, compile: bool = False) -> Iterator[None]:
    """Within this block, sparring.train.train uses these options."""
    token = _OPTIONS.set(TrainingOptions(check_precision(precision), bool(channels_last), bool(compile)))
    try:
        yield
    finally:
        _OPTIONS.reset(token)


def current_options() -> TrainingOptions:
    return _OPTIONS.get()


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
    switches = [*_tf32_switches(), (torch.backends.cudnn, "deterministic", True), (torch.backends.cudnn, "benchmark", False)]
    saved = [getattr(obj, name) for obj, name, _ in switches]
    try:
        for obj, name, value in switches:
            setattr(obj, name, value)
        yield
    finally:
        for (obj, name, _), value in zip(switches, saved):
            setattr(obj, name, value)


def with_exact_float32(fn: Callable[..., object]) -> Callable[..., object]:
    """Decorator: ``fn(model, x, ...)`` runs within ``exact_float32(x.device)``."""

    @functools.wraps(fn)
    def run(model: object, x: torch.Tensor, *args: object, **kwargs: object) -> object:
        with exact_float32(x.device):
            return fn(model, x, *args, **kwargs)

    return run
