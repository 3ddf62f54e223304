"""Optimizers and learning-rate schedules the training loop (and configs) can name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..registry import Registry

__all__ = ["OPTIMIZERS", "SCHEDULES"]

#: fn(params, *, lr, momentum, weight_decay) -> Optimizer
OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer")
OPTIMIZERS.register("sgd", description="SGD with momentum")(
    lambda p, *, lr, momentum, weight_decay: torch.optim.SGD(p, lr=lr, momentum=momentum, weight_decay=weight_decay)
)
OPTIMIZERS.register("adam", description="Adam (Kingma & Ba 2015, arXiv:1412.6980); momentum unused")(
    lambda p, *, lr, momentum, weight_decay: torch.optim.Adam(p, lr=lr, weight_decay=weight_decay)
)

#: fn(optimizer, *, lr, epochs, steps_per_epoch) -> scheduler stepped once per batch, or None
SCHEDULES: Registry[Callable[..., Any]] = Registry("schedule")
SCHEDULES.register("none", description="constant learning rate")(lambda opt, **_: None)
SCHEDULES.register("cosine", description="cosine annealing to 0 over all steps (arXiv:1608.03983)")(
    lambda opt, *, epochs, steps_per_epoch, **_: torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, epochs * steps_per_epoch)
)
SCHEDULES.register("step", description="x0.1 at 50% and 75% of the epochs")(
    lambda opt, *, epochs, steps_per_epoch, **_: torch.optim.lr_scheduler.MultiStepLR(
        opt, sorted({steps_per_epoch * e for e in (epochs // 2, 3 * epochs // 4) if e > 0}), gamma=0.1
    )
)
SCHEDULES.register("onecycle", description="one-cycle policy, peak lr (Smith & Topin 2017, arXiv:1708.07120)")(
    lambda opt, *, lr, epochs, steps_per_epoch: torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=epochs * steps_per_epoch
    )
)
