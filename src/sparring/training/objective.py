"""What a training run minimizes: the Objective protocol of sparring.training.train, and cross-entropy.

A defense's recipe is an Objective: adversarial training crafts examples in ``loss`` and guards against
catastrophic overfitting in ``epoch_end``; distillation fits soft labels; the autoencoder fits its
reconstructions and has no class logits at all (``loss`` returns None for them, and the epoch records
carry no train accuracy). The state an objective keeps across epochs goes into the training-state file
through ``state_dict`` / ``load_state_dict``, so a resumed run ends as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from ..util import dry_run

__all__ = ["CrossEntropy", "Objective"]


class Objective:
    """The protocol train() drives; subclass it and override ``loss`` (the rest has defaults).

    - ``check(model, x, y)``: before training, that the model takes the data (default: a dry forward pass
      on two images, logits (B, K) with every label below K).
    - ``loss(model, x, y, index, epoch) -> (loss, logits or None)``: the loss of one (augmented) batch, the
      model in train mode (under torchrun, its DistributedDataParallel wrapper); index holds the batch's
      sample indices, for per-sample randomness; logits aligned with y give the epoch's train_accuracy.
    - ``epoch_end(epoch, record) -> stop``: after each epoch's metrics; it may add keys to record or change
      the model; a true return ends training after this epoch.
    - ``state_dict()`` / ``load_state_dict(state)``: what it keeps across epochs (tensors and plain values),
      saved with the training state and restored on resume.
    - ``name``: recorded with the training state; a resumed run must use an objective of the same name.
    """

    @property
    def name(self) -> str:
        return type(self).__qualname__

    def check(self, model: nn.Module, x: Tensor, y: Tensor) -> None:
        out = dry_run(model, x[:2], "training")
        if out.dim() != 2 or int(y.max()) >= out.shape[1]:
            raise InputError(f"expected labels below the model's {out.shape[-1]} outputs, got max {int(y.max())}")

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor, epoch: int) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError(f"{type(self).__name__} must define loss()")

    def epoch_end(self, epoch: int, record: dict[str, Any]) -> bool:
        return False

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``'s output (nothing to restore by default)."""


class CrossEntropy(Objective):
    """Plain supervised training: the cross-entropy of the logits (in float32 under autocast)."""

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor, epoch: int) -> tuple[Tensor, Tensor | None]:
        logits = model(x)
        return F.cross_entropy(logits.float(), y), logits
