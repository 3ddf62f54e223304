"""Checking a TrainSettings (sparring.config) before training: numbers in range, names registered."""

from __future__ import annotations

from ..config import TrainSettings
from ..errors import InputError
from ..precision import check_precision
from ..util import check_flag, check_number
from .augment import AUGMENTATIONS
from .optim import OPTIMIZERS, SCHEDULES

__all__ = ["TrainSettings", "check_settings"]


def check_settings(settings: TrainSettings) -> TrainSettings:
    """``settings`` when every knob is valid, else a one-line InputError (UnknownNameError for a name that is
    not registered, with "did you mean").

        >>> check_settings(TrainSettings(epochs=0))  # InputError: expected epochs to be an integer >= 1, got 0
    """
    if not isinstance(settings, TrainSettings):
        raise InputError(f"expected settings to be a sparring.TrainSettings, got {type(settings).__name__}")
    check_number(settings.epochs, "epochs", integer=True, low=1)
    check_number(settings.batch_size, "batch_size", integer=True, low=1)
    check_number(settings.lr, "lr", low=0, low_open=True)
    check_number(settings.weight_decay, "weight_decay", low=0)
    check_number(settings.momentum, "momentum", low=0, high=1, high_open=True)
    check_number(settings.pad, "pad", integer=True, low=0)
    OPTIMIZERS.get(settings.optimizer)
    SCHEDULES.get(settings.schedule)
    AUGMENTATIONS.get(settings.augment)
    check_precision(settings.precision)
    check_flag(settings.channels_last, "channels_last")
    check_flag(settings.compile, "compile")
    return settings
