"""Speed opt-ins for training (and, separately, attacks): mixed precision, channels_last, torch.compile.

Training reads them from a context, so every recipe (plain, adversarial, distillation, contrastive,
smoothing) gets them without new parameters:

    with training_options(precision="bf16", channels_last=True):
        train(model, x, y, ...)

Attacks run in float32 unless asked: the runner's `precision` opt-in wraps them in `autocast`, and the
audit notes it (reduced-precision gradients can understate an attack).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import torch

from .errors import InputError

__all__ = ["PRECISIONS", "TrainingOptions", "autocast", "check_precision", "current_options", "training_options"]

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
