"""One-step attacks: FGSM, fast gradient value, RAND+FGSM and step-LL, all one step of the loop."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..rng import Generators, normal
from ..threat import Norm, ThreatModel
from ..util import rows
from .checks import check_batch, check_labels, check_positive
from .loop import gradient_loop
from .registry import ATTACKS


@ATTACKS.register("fgsm", kind="budget", norms=("linf", "l2", "l1"), needs_grad=True, targeted="optional",
                  paper="Goodfellow et al. 2015, arXiv:1412.6572")
def fgsm(model: nn.Module, x: Tensor, y: Tensor, *, threat: ThreatModel, targeted: bool = False,
         loss: str = "ce", generator: Generators = None) -> Tensor:
    """Fast gradient sign method: x + eps * sign(grad) (the norm's steepest step for L2/L1).

    Goodfellow, Shlens, Szegedy, "Explaining and harnessing adversarial examples", arXiv:1412.6572.
    With targeted=True, y holds target classes and the step lowers their loss (one-step target class).
        >>> x_adv = fgsm(model, x, y, threat=ThreatModel(Norm.LINF, 8 / 255))
    """
    return gradient_loop(model, x, y, threat=threat, steps=1, step_size=threat.eps,
                         targeted=targeted, loss=loss, generator=generator)


def _value_direction(grad: Tensor) -> Tensor:
    return grad / rows(grad.flatten(1).abs().amax(dim=1).clamp_min(1e-12), grad)


@ATTACKS.register("fgv", kind="budget", norms=("linf",), needs_grad=True, targeted="optional",
                  paper="Rozsa et al. 2016, arXiv:1605.01775")
def fgv(model: nn.Module, x: Tensor, y: Tensor, *, threat: ThreatModel, targeted: bool = False,
        loss: str = "ce", generator: Generators = None) -> Tensor:
    """Fast gradient value: x + eps * grad / max|grad| (keeps the gradient's shape, not its sign).

    Rozsa, Rudd, Boult, "Adversarial diversity and hard positive generation", arXiv:1605.01775.
        >>> x_adv = fgv(model, x, y, threat=ThreatModel(Norm.LINF, 0.1))
    """
    if threat.norm is not Norm.LINF:
        raise InputError(f"fgv supports norm linf, got {threat.norm.value}")
    return gradient_loop(model, x, y, threat=threat, steps=1, step_size=threat.eps, targeted=targeted,
                         loss=loss, generator=generator, direction=_value_direction)


@ATTACKS.register("rand-fgsm", kind="budget", norms=("linf",), needs_grad=True, targeted="optional",
                  paper="Tramer et al. 2018, arXiv:1705.07204")
def rand_fgsm(model: nn.Module, x: Tensor, y: Tensor, *, threat: ThreatModel, random_step: float | None = None,
              targeted: bool = False, loss: str = "ce", generator: Generators = None) -> Tensor:
    """RAND+FGSM: a random sign step of size random_step, then FGSM with the rest of the budget.

    Tramer et al., "Ensemble adversarial training: attacks and defenses", arXiv:1705.07204.
    random_step defaults to eps / 2 and must be below eps.
        >>> x_adv = rand_fgsm(model, x, y, threat=ThreatModel(Norm.LINF, 0.3), generator=g)
    """
    if threat.norm is not Norm.LINF:
        raise InputError(f"rand-fgsm supports norm linf, got {threat.norm.value}")
    check_batch(x, y, threat)
    rand = threat.eps / 2 if random_step is None else check_positive("random_step", random_step, allow_zero=True)
    if rand >= threat.eps:
        raise InputError(f"random_step must be < eps ({threat.eps}), got {rand}")
    start = threat.clamp(x.detach() + rand * normal(generator, x).sign())
    return gradient_loop(model, x, y, threat=threat, steps=1, step_size=threat.eps - rand, targeted=targeted,
                         loss=loss, generator=generator, x_init=start)


@ATTACKS.register("step-ll", kind="budget", norms=("linf", "l2", "l1"), needs_grad=True, targeted="never",
                  paper="Kurakin et al. 2017, arXiv:1611.01236")
def step_ll(model: nn.Module, x: Tensor, y: Tensor, *, threat: ThreatModel, generator: Generators = None) -> Tensor:
    """One-step least-likely class: a targeted FGSM step toward the class the model ranks last.

    Kurakin, Goodfellow, Bengio, "Adversarial machine learning at scale", arXiv:1611.01236.
    y (the true labels) is only validated; the target is argmin of the clean logits.
        >>> x_adv = step_ll(model, x, y, threat=ThreatModel(Norm.LINF, 8 / 255))
    """
    check_batch(x, y, threat)
    with torch.no_grad():
        logits = model(x)
    check_labels(y, logits.shape[1])
    target = logits.argmin(dim=1)
    return gradient_loop(model, x, target, threat=threat, steps=1, step_size=threat.eps, targeted=True,
                         loss="ce", generator=generator)


__all__ = ["fgsm", "fgv", "rand_fgsm", "step_ll"]
