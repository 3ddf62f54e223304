"""Defensive distillation (Papernot, McDaniel, Wu, Jha, Swami 2016, arXiv:1511.04508).

Train a teacher with softmax at temperature T (loss on logits / T), label the training set with
the teacher's softmax at T (soft labels), train a student of the same architecture on those soft
labels at T, and deploy the student at T = 1 (its plain logits).

Why it looks robust, and why it is not: training at T drives the logits to about T times their
usual size, so at T = 1 the softmax saturates (max probability 1 to float precision on most
inputs). The cross-entropy gradient, p - onehot(y), then vanishes or underflows to exactly 0, so
FGSM/PGD with loss="ce" barely move. The logits themselves are unchanged in direction: an attack
on the logits (loss="margin"/"logit", or CE on logits / T, see ``Temperature``) defeats it
(Carlini & Wagner 2016, "Defensive distillation is not robust to adversarial examples",
arXiv:1607.04311). Evaluate a distilled model with the margin loss, never with CE alone.

Both networks go through the one training loop, ``sparring.train.train``: the teacher as
``Temperature(teacher, T)`` (cross-entropy of logits / T is exactly its loss), the student with
``batch_loss`` computing the soft-label cross-entropy at T for the batch's sample indices.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import teacher_path
from ..errors import InputError
from ..train import _check_data, _dtype, _positive, model_device, train
from .registry import DEFENSES

__all__ = ["Temperature", "distill", "soft_labels"]

_PAPERNOT = ("Papernot, McDaniel, Wu, Jha, Swami 2016, Distillation as a Defense to Adversarial Perturbations "
             "against Deep Neural Networks, arXiv:1511.04508; broken by Carlini & Wagner 2016, arXiv:1607.04311")


def _temperature(value: Any) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if not ok:
        raise InputError(f"expected temperature to be a finite number > 0, got {value!r}")
    return float(value)


class Temperature(nn.Module):
    """A classifier's logits divided by T: forward(x) = model(x) / T.

    Used to train the teacher at T with the plain cross-entropy loop, and by an attacker to undo
    the saturation of a distilled model (Carlini & Wagner 2016, arXiv:1607.04311).
    Args: model, a classifier returning logits (B, K); temperature, T > 0.
        >>> hot = Temperature(student, 20)
        >>> x_adv = fgsm(hot, x, y, threat=ThreatModel(Norm.LINF, 0.1))  # CE no longer vanishes
    """

    def __init__(self, model: nn.Module, temperature: float) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise InputError(f"expected model to be an nn.Module, got {type(model).__name__}")
        self.model, self.temperature = model, _temperature(temperature)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x) / self.temperature

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


def soft_labels(model: nn.Module, x: Tensor, *, temperature: float, batch_size: int = 512) -> Tensor:
    """softmax(model(x) / T) for every image, in eval mode without gradients: (N, K) rows summing to 1.

    Papernot et al. 2016, arXiv:1511.04508 (the teacher's labels for the student). The model's mode
    is restored; batches go to the device of the model's first parameter.
        >>> targets = soft_labels(teacher, x_train, temperature=20)
        >>> targets.sum(1)  # all ones
    """
    t = _temperature(temperature)
    batch_size = _positive(batch_size, "batch_size")
    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            parts = [F.softmax(model(x[i : i + batch_size].to(device, _dtype(model))).double() / t, dim=1)
                     for i in range(0, len(x), batch_size)]  # fmt: skip
    finally:
        model.train(was_training)
    return torch.cat(parts).float()


def _soft_loss(targets: Tensor, temperature: float) -> Callable[..., tuple[Tensor, Tensor]]:
    """train()'s batch_loss: -sum(p * log_softmax(logits / T)) against the soft targets p of the batch's rows."""

    def batch_loss(model: nn.Module, x: Tensor, y: Tensor, index: Tensor, epoch: int) -> tuple[Tensor, Tensor]:
        logits = model(x)
        p = targets[index.to(targets.device)].to(logits.device, logits.dtype)
        return -(p * F.log_softmax(logits / temperature, dim=1)).sum(1).mean(), logits

    return batch_loss


@DEFENSES.register("distillation", kind="training", differentiable=True, random=False, paper=_PAPERNOT,
                   params={"temperature": 20}, description="defensive distillation; deploy the student at T=1")
def distill(
    model: nn.Module | Callable[[], nn.Module],
    x_train: Tensor,
    y_train: Tensor,
    *,
    temperature: float = 20.0,
    epochs: int = 10,
    student_epochs: int | None = None,
    batch_size: int = 128,
    optimizer: str = "adam",
    lr: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    schedule: str = "cosine",
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
    log: Callable[[str], Any] | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """Defensive distillation at temperature T; returns the student, to be deployed at T = 1.

    Papernot et al. 2016, arXiv:1511.04508. The student's plain logits are about T times larger
    than a normally trained model's, so softmax saturates and CE gradients vanish; attack it with
    loss="margin" (Carlini & Wagner 2016, arXiv:1607.04311). Weight decay defaults to 0 because it
    fights the large logits training at T needs; Adam is the default because the 1/T factor in the
    gradients would stall SGD at train()'s usual learning rate.

    Args:
        model: the architecture, either an nn.Module (teacher and student start from deep copies
            of its current weights; it is left untouched) or a zero-argument builder called twice
            under a seeded RNG (teacher, student).
        x_train, y_train: float (N, C, H, W) images in [0, 1] and integer labels (N,).
        temperature: T > 0 for the teacher's loss, its soft labels and the student's loss.
        epochs: teacher epochs; student_epochs: student epochs (default: epochs).
        batch_size, optimizer, lr, momentum, weight_decay, schedule, seed, device, progress, log:
            as in ``sparring.train.train``, for both networks (log lines start "teacher"/"student").
        checkpoint, resume: as in ``sparring.train.train``; the student is checkpointed at
            ``checkpoint``, the teacher at ``<stem>.teacher`` (its own .safetensors, .json and
            .train-state.pt), so a resumed run skips a finished teacher and continues the student.
    Returns:
        (student in eval mode, info) with info keys temperature, teacher (the trained teacher, also
        at T = 1), teacher_history, student_history (train()'s records; train_accuracy on y_train).

    Example:
        >>> student, info = distill(build_model("digits-cnn"), x, y, temperature=20, epochs=10)
        >>> x_adv = pgd(student, x, y, threat=ThreatModel(Norm.LINF, 0.1), loss="margin")
    """
    t = _temperature(temperature)
    x_train, y_train = _check_data(x_train, y_train, "training")  # the rest is validated by train()
    if student_epochs is not None:
        _positive(student_epochs, "student_epochs")
    if isinstance(model, nn.Module):
        teacher, student = copy.deepcopy(model), copy.deepcopy(model)
    elif callable(model):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            teacher, student = model(), model()
        if not isinstance(teacher, nn.Module) or not isinstance(student, nn.Module):
            raise InputError(f"expected the builder to return an nn.Module, got {type(teacher).__name__}")
    else:
        raise InputError(f"expected an nn.Module or a model builder, got {type(model).__name__}")
    common = dict(batch_size=batch_size, optimizer=optimizer, lr=lr, momentum=momentum,
                  weight_decay=weight_decay, schedule=schedule, seed=seed)  # fmt: skip
    teacher_log = None if log is None else (lambda line: log(f"teacher {line}"))
    teacher_checkpoint = None if checkpoint is None else teacher_path(checkpoint)
    teacher_history = train(Temperature(teacher, t), x_train, y_train, epochs=epochs, device=device,
                            progress=progress, log=teacher_log, checkpoint=teacher_checkpoint, resume=resume,
                            **common)  # type: ignore[arg-type]
    targets = soft_labels(teacher, x_train, temperature=t)
    student_log = None if log is None else (lambda line: log(f"student {line}"))
    student_history = train(student, x_train, y_train, epochs=epochs if student_epochs is None else student_epochs,
                            device=device, progress=progress, log=student_log, batch_loss=_soft_loss(targets, t),
                            checkpoint=checkpoint, resume=resume, **common)  # type: ignore[arg-type]
    info = {"temperature": t, "teacher": teacher.eval(), "teacher_history": teacher_history,
            "student_history": student_history}  # fmt: skip
    return student.eval(), info
