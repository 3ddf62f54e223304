"""The gradient loop, written once: FGSM, FGV, RAND+FGSM, step-LL, BIM/PGD and the iterative
L2 attack are all calls of `gradient_loop` with different arguments.

Per step: one forward and one backward pass w.r.t. the input (never the parameters), a step
in the threat model's geometry, a projection. The forward pass of step t also tells which
samples the iterate of step t already fools; the loop returns, per sample, the last iterate
that fooled the model (or the final iterate when none did), so a sample that was adversarial
at any step stays adversarial. With early_stop, fooled samples leave the batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..rng import Generators, subset
from ..threat import ThreatModel
from ..util import rows
from .checks import check_batch, check_labels, check_positive, check_positive_int
from .losses import get_loss, is_adversarial

Direction = Callable[[Tensor], Tensor]


def gradient_loop(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    threat: ThreatModel,
    steps: int,
    step_size: float,
    random_start: bool = False,
    restarts: int = 1,
    targeted: bool = False,
    loss: str = "ce",
    early_stop: bool = False,
    generator: Generators = None,
    direction: Direction | None = None,
    x_init: Tensor | None = None,
) -> Tensor:
    """Maximize the loss over the threat model by projected steepest ascent.

    Args: see `pgd`; `direction` replaces the norm's step direction (it gets the gradient and
    returns a step of unit size, scaled here by step_size); `x_init` replaces the first start.
    Returns the adversarial batch (same shape, dtype and device as x).
    """
    check_batch(x, y, threat)
    steps = check_positive_int("steps", steps)
    restarts = check_positive_int("restarts", restarts)
    step_size = check_positive("step_size", step_size)
    objective = get_loss(loss)
    x = x.detach()
    y = y.to(device=x.device, dtype=torch.int64)
    best = x.clone()
    found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    select = steps > 1 or restarts > 1 or early_stop
    with torch.enable_grad():
        for restart in range(restarts):
            todo = ~found
            if not bool(todo.any()):
                break
            rows = todo.nonzero().flatten()
            xs, ys, gens = x[rows], y[rows], subset(generator, todo)
            if x_init is not None and restart == 0:
                start = x_init.detach()[rows]
            elif random_start:
                start = threat.random_init(xs, gens)
            else:
                start = xs.clone()
            x_out, hit = _ascend(model, xs, ys, start, threat, steps, step_size, targeted,
                                 objective, early_stop, direction, select, check=restart == 0)
            best[rows] = x_out
            found[rows] = hit
    return best


def _ascend(model: nn.Module, xs: Tensor, ys: Tensor, start: Tensor, threat: ThreatModel,
            steps: int, step_size: float, targeted: bool, objective: Callable[..., Tensor],
            early_stop: bool, direction: Direction | None, select: bool,
            check: bool) -> tuple[Tensor, Tensor]:
    """One restart on the rows xs; returns (per-sample result, fooled flags).

    `live` holds the rows still being attacked (all of them unless early_stop drops fooled ones).
    """
    x_adv = start.detach()
    kept = xs.clone()
    hit = torch.zeros(xs.shape[0], dtype=torch.bool, device=xs.device)
    live = None  # None = every row
    for step in range(steps):
        x_live = (x_adv if live is None else x_adv[live]).requires_grad_(True)
        y_live = ys if live is None else ys[live]
        logits = model(x_live)
        if check and step == 0:
            check_labels(ys, logits.shape[1])
        fooled = is_adversarial(logits.detach(), y_live, targeted)
        (grad,) = torch.autograd.grad(objective(logits, y_live, targeted).sum(), x_live)
        x_live = x_live.detach()
        if select:
            _remember(kept, hit, live, x_live, fooled)
        moved = direction(grad) * step_size if direction is not None else threat.step(grad, step_size, x_live)
        new = threat.project(x_live + moved, xs if live is None else xs[live])
        if early_stop:
            new = torch.where(rows(fooled, new), x_live, new)
        x_adv = new if live is None else x_adv.index_copy(0, live, new)
        if early_stop:
            live = (torch.arange(xs.shape[0], device=xs.device) if live is None else live)[~fooled]
            if live.numel() == 0:
                return kept, hit
    if not select:
        return x_adv, hit
    with torch.no_grad():
        x_last = x_adv if live is None else x_adv[live]
        fooled = is_adversarial(model(x_last), ys if live is None else ys[live], targeted)
    _remember(kept, hit, live, x_last, fooled)
    return torch.where(rows(hit, kept), kept, x_adv), hit


def _remember(kept: Tensor, hit: Tensor, live: Tensor | None, x_live: Tensor, fooled: Tensor) -> None:
    """Store the iterates that fool the model into `kept` (in place) and mark them in `hit`."""
    if live is None:
        kept.copy_(torch.where(rows(fooled, x_live), x_live, kept))
        hit |= fooled
    else:
        kept[live] = torch.where(rows(fooled, x_live), x_live, kept[live])
        hit[live] |= fooled
