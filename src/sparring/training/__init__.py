"""Training: the one loop (sparring.training.train), its settings, the objectives recipes plug in, optimizers,
schedules, augmentations and the resumable training state.

    >>> from sparring.training import TrainSettings, train
    >>> history = train(model, x, y, TrainSettings(epochs=5), seed=0)
"""

from __future__ import annotations

from .augment import AUGMENTATIONS, augment_batch
from .checkpoint import beside, discard, partial, state_path, teacher_path
from .loop import Run, check_data, evaluate_accuracy, prepare, run_epoch, save_epoch, train
from .objective import CrossEntropy, Objective
from .optim import OPTIMIZERS, SCHEDULES
from .settings import TrainSettings, check_settings

__all__ = ["AUGMENTATIONS", "OPTIMIZERS", "SCHEDULES", "CrossEntropy", "Objective", "Run", "TrainSettings",
           "augment_batch", "beside", "check_data", "check_settings", "discard", "evaluate_accuracy", "partial",
           "prepare", "run_epoch", "save_epoch", "state_path", "teacher_path", "train"]
