"""Decoupled Direction and Norm (DDN): a cheap minimal L2 attack."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from ..rng import Generators, normal, subset
from ..threat import Norm, ThreatModel
from ..util import rows
from .checks import check_labels, check_positive, check_positive_int
from .minimal import Best, fooled, prepare
from .registry import ATTACKS


@ATTACKS.register("ddn", kind="minimal", norms=("l2",), needs_grad=True, targeted="optional",
                  paper="Rony et al. 2019, arXiv:1811.09600", test_params={"steps": 20})
def ddn(model: nn.Module, x: Tensor, y: Tensor, *, threat: ThreatModel | None = None, steps: int = 100,
        step_size: float = 1.0, norm_step: float = 0.05, init_norm: float = 1.0, targeted: bool = False,
        generator: Generators = None) -> Tensor:
    """DDN: a normalized cross-entropy gradient step for the direction, then the norm shrinks by
    a factor 1 - norm_step when the iterate is adversarial and grows by 1 + norm_step otherwise.

    Rony et al., "Decoupling direction and norm for efficient gradient-based L2 adversarial attacks
    and defenses", arXiv:1811.09600. Args: steps (one forward and backward pass each), step_size
    (the initial step, cosine-annealed to step_size / 100), norm_step (the paper's gamma),
    init_norm (the starting radius), targeted (y = targets). The smallest adversarial iterate of
    each sample is returned (the input where none fooled the model). `generator` draws a random
    direction for a sample whose gradient vanishes.
        >>> x_adv = ddn(model, x, y, steps=100)
        >>> norms = (x_adv - x).flatten(1).norm(dim=1)
    """
    threat, x, y = prepare(x, y, threat, "ddn", (Norm.L2,))
    steps = check_positive_int("steps", steps)
    step_size = check_positive("step_size", step_size)
    norm_step = check_positive("norm_step", norm_step)
    if norm_step >= 1:
        raise InputError(f"norm_step must be < 1, got {norm_step}")
    init_norm = check_positive("init_norm", init_norm)
    lo, hi = threat.bounds
    best = Best(x, threat)
    everyone = torch.arange(x.shape[0], device=x.device)
    reach = torch.maximum(x - lo, hi - x).flatten(1).norm(dim=1)  # no point in the box is farther
    radius = torch.full_like(reach, init_norm).minimum(reach)
    delta = torch.zeros_like(x)
    for step in range(steps):
        size = step_size * (0.01 + 0.99 * (1 + math.cos(math.pi * step / steps)) / 2)
        with torch.enable_grad():
            x_adv = (x + delta).requires_grad_(True)
            logits = model(x_adv)
            if step == 0:
                check_labels(y, logits.shape[1])
            loss = F.cross_entropy(logits, y, reduction="sum")
            (grad,) = torch.autograd.grad(-loss if targeted else loss, x_adv)
        hit = fooled(logits.detach(), y, targeted)
        best.update(everyone, x_adv.detach(), hit)
        grad_norm = grad.flatten(1).norm(dim=1)
        flat = grad_norm == 0
        if bool(flat.any()):
            grad[flat] = normal(subset(generator, flat), grad[flat])
            grad_norm = grad.flatten(1).norm(dim=1)
        delta = delta + size * grad / rows(grad_norm, grad)
        radius = (radius * torch.where(hit, 1 - norm_step, 1 + norm_step)).minimum(reach)
        delta = delta * rows(radius / delta.flatten(1).norm(dim=1).clamp_min(1e-12), delta)
        delta = threat.clamp(x + delta) - x
    return best.result()
