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

Both networks go through the one training loop, ``sparring.training.train``: the teacher as
``Temperature(teacher, T)`` (cross-entropy of logits / T is exactly its loss), the student with the
``SoftLabels`` objective, the soft-label cross-entropy at T for the batch's sample indices.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import TrainSettings
from ..errors import InputError
from ..training import Objective, check_data, teacher_path, train
from ..util import check_number, model_device, model_dtype
from .base import Context, DefenseSpec, Param, Trained, register

__all__ = ["DISTILL_TRAINING", "SoftLabels", "Temperature", "distill", "soft_labels"]

_PAPERNOT = ("Papernot, McDaniel, Wu, Jha, Swami 2016, Distillation as a Defense to Adversarial Perturbations "
             "against Deep Neural Networks, arXiv:1511.04508; broken by Carlini & Wagner 2016, arXiv:1607.04311")


def _temperature(value: Any) -> float:
    return float(check_number(value, "temperature", low=0, low_open=True))


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
    batch_size = check_number(batch_size, "batch_size", integer=True, low=1)
    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            parts = [F.softmax(model(x[i : i + batch_size].to(device, model_dtype(model))).double() / t, dim=1)
                     for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(parts).float()


class SoftLabels(Objective):
    """-sum(p * log_softmax(logits / T)) against the soft targets p of the batch's rows (the student's loss)."""

    def __init__(self, targets: Tensor, temperature: float) -> None:
        self.targets, self.temperature = targets, temperature

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor, epoch: int) -> tuple[Tensor, Tensor | None]:
        logits = model(x)
        p = self.targets[index.to(self.targets.device)].to(logits.device, logits.dtype)
        return -(p * F.log_softmax(logits / self.temperature, dim=1)).sum(1).mean(), logits


#: distill's settings when none are given: Adam 1e-3 without weight decay, 10 epochs of batch 128, cosine.
DISTILL_TRAINING = TrainSettings(epochs=10, batch_size=128, optimizer="adam", lr=1e-3, weight_decay=0.0)


def distill(
    model: nn.Module | Callable[[], nn.Module],
    x_train: Tensor,
    y_train: Tensor,
    *,
    temperature: float = 20.0,
    settings: TrainSettings | None = None,
    student_epochs: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    checkpoint: str | Path | None = None,
    resume: bool = False,
    progress: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """Defensive distillation at temperature T; returns the student, to be deployed at T = 1.

    Papernot et al. 2016, arXiv:1511.04508. The student's plain logits are about T times larger
    than a normally trained model's, so softmax saturates and CE gradients vanish; attack it with
    loss="margin" (Carlini & Wagner 2016, arXiv:1607.04311). The default settings (DISTILL_TRAINING: Adam,
    no weight decay) suit it: weight decay fights the large logits training at T needs, and the 1/T factor
    in the gradients would stall SGD at a plain learning rate.

    Args:
        model: the architecture, either an nn.Module (teacher and student start from deep copies
            of its current weights; it is left untouched) or a zero-argument builder called twice
            under a seeded RNG (teacher, student).
        x_train, y_train: float (N, C, H, W) images in [0, 1] and integer labels (N,).
        temperature: T > 0 for the teacher's loss, its soft labels and the student's loss.
        settings: both networks' TrainSettings (epochs: the teacher's); student_epochs: the student's epochs
            (default: the same). seed, device, progress: as in ``sparring.training.train``, for both
            networks (their log lines start "teacher" / "student").
        checkpoint, resume: as in ``sparring.training.train``; the student is checkpointed at
            ``checkpoint``, the teacher at ``<stem>.teacher`` (its own .safetensors, .json and
            .train-state.pt), so a resumed run skips a finished teacher and continues the student.
    Returns:
        (student in eval mode, info) with info keys temperature, teacher (the trained teacher, also
        at T = 1), teacher_history, student_history (train()'s records; train_accuracy on y_train).

    Example:
        >>> student, info = distill(build_model("digits-cnn"), x, y, temperature=20, settings=TrainSettings(epochs=10))
        >>> x_adv = pgd(student, x, y, threat=ThreatModel(Norm.LINF, 0.1), loss="margin")
    """
    t = _temperature(temperature)
    x_train, y_train = check_data(x_train, y_train, "training")  # the rest is validated by train()
    settings = DISTILL_TRAINING if settings is None else settings
    if student_epochs is not None:
        check_number(student_epochs, "student_epochs", integer=True, low=1)
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
    common: dict[str, Any] = {"seed": seed, "device": device, "resume": resume, "progress": progress}
    teacher_history = train(Temperature(teacher, t), x_train, y_train, settings, label="teacher",
                            checkpoint=None if checkpoint is None else teacher_path(checkpoint), **common)
    targets = soft_labels(teacher, x_train, temperature=t)
    student_settings = settings if student_epochs is None else settings.replace(epochs=student_epochs)
    student_history = train(student, x_train, y_train, student_settings, objective=SoftLabels(targets, t),
                            label="student", checkpoint=checkpoint, **common)
    info = {"temperature": t, "teacher": teacher.eval(), "teacher_history": teacher_history,
            "student_history": student_history}
    return student.eval(), info


def _trained(model: nn.Module, context: Context, params: dict[str, Any]) -> Trained:
    x_train, y_train = context.training_data("distillation", augment=False)
    student, info = distill(model, x_train, y_train, settings=context.settings, seed=context.seed,
                            device=context.device, checkpoint=context.checkpoint, resume=context.resume,
                            progress=context.progress, **params)
    return Trained(student, {"teacher": info["teacher_history"], "student": info["student_history"]})


register(DefenseSpec(
    "distillation", kind="training", differentiable=True, random=False, paper=_PAPERNOT, target=distill,
    description="defensive distillation; deploy the student at T=1",
    params=(Param("temperature", "float", 20.0, "softmax temperature of teacher and student"),
            Param("student_epochs", "int", None, "the student's epochs (default: the teacher's)")),
    train=_trained))
