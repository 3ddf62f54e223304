"""Universal adversarial perturbations: one delta that fools a classifier on most inputs.

Moosavi-Dezfooli et al. 2017 (arXiv:1610.08401) find delta with a DeepFool loop over the
data; here delta is fitted by projected stochastic gradient ascent on the batch loss, as in
Shafahi et al. 2020 (arXiv:1812.03705): faster, and as strong on small models.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..rng import Generators, uniform
from ..threat import ThreatModel
from .checks import check_batch, check_labels, check_positive, check_positive_int
from .losses import get_loss
from .registry import ATTACKS


def universal_perturbation(model: nn.Module, x: Tensor, y: Tensor, *, threat: ThreatModel, steps: int = 10,
                           step_size: float | None = None, minibatch: int = 32, loss: str = "margin",
                           cap: float | None = None, targeted: bool = False,
                           generator: Generators = None) -> Tensor:
    """Fit one perturbation delta (shape (1, C, H, W), within the eps ball) for the whole batch.

    Moosavi-Dezfooli, Fawzi, Fawzi, Frossard, "Universal adversarial perturbations",
    arXiv:1610.08401; fitted by stochastic projected gradient ascent (Shafahi et al.,
    "Universal adversarial training", arXiv:1812.03705).
    Args: steps: passes over x, in shuffled minibatches of `minibatch` samples; step_size: absolute
    step of the norm's steepest ascent (default eps / 10); loss: a name of the loss table
    ("margin" default, "ce"); cap: an optional per-sample loss ceiling (0 with "margin": fooled
    samples stop pulling on delta); targeted: y holds target classes.
        >>> delta = universal_perturbation(model, x, y, threat=ThreatModel(Norm.LINF, 0.1), generator=g)
        >>> x_adv = (x_new + delta).clamp(0, 1)
    """
    check_batch(x, y, threat)
    if not threat.bounded:
        raise InputError("universal perturbations need a finite eps, got eps=inf")
    steps, minibatch = check_positive_int("steps", steps), check_positive_int("minibatch", minibatch)
    size = threat.eps / 10 if step_size is None else check_positive("step_size", step_size)
    ceiling = math.inf if cap is None else float(cap)
    if math.isnan(ceiling):
        raise InputError(f"cap must be a number or None, got {cap!r}")
    objective = get_loss(loss)
    ball = ThreatModel(threat.norm, threat.eps, bounds=(-math.inf, math.inf))
    x, y = x.detach(), y.to(device=x.device, dtype=torch.int64)
    delta = torch.zeros_like(x[:1])
    if threat.eps == 0:
        return delta
    keys = uniform(generator, x.new_empty(x.shape[0], steps)).T  # one shuffle key per (pass, sample)
    checked = False
    with torch.enable_grad():
        for order in keys.argsort(dim=1):
            for rows in order.split(minibatch):
                d = delta.detach().requires_grad_(True)
                logits = model(threat.clamp(x[rows] + d))
                if not checked:
                    check_labels(y, logits.shape[1])
                    checked = True
                value = objective(logits, y[rows], targeted).clamp_max(ceiling).mean()
                (grad,) = torch.autograd.grad(value, d)
                delta = ball.project(delta + ball.step(grad, size), torch.zeros_like(delta))
    return delta.detach()


@ATTACKS.register("universal", kind="budget", norms=("linf", "l2", "l1"), needs_grad=True, targeted="optional",
                  paper="Moosavi-Dezfooli et al. 2017, arXiv:1610.08401",
                  test_params={"steps": 3, "minibatch": 8}, batch_dependent=True,
                  renamed={"batch_size": "minibatch"})
def universal(model: nn.Module, x: Tensor, y: Tensor, *, threat: ThreatModel, steps: int = 10,
              step_size: float | None = None, minibatch: int = 32, loss: str = "margin",
              cap: float | None = None, targeted: bool = False, generator: Generators = None) -> Tensor:
    """Fit one universal perturbation on the batch it gets and return clamp(x + delta).

    Moosavi-Dezfooli et al., "Universal adversarial perturbations", arXiv:1610.08401; see
    universal_perturbation for the arguments. The result depends on the whole batch by design.
        >>> x_adv = universal(model, x, y, threat=ThreatModel(Norm.LINF, 0.1), steps=10, generator=g)
        >>> shared = x_adv - x  # the same delta on every sample, up to clipping into the box
    """
    delta = universal_perturbation(model, x, y, threat=threat, steps=steps, step_size=step_size,
                                   minibatch=minibatch, loss=loss, cap=cap, targeted=targeted,
                                   generator=generator)
    return threat.project(x.detach() + delta, x.detach())


__all__ = ["universal", "universal_perturbation"]
