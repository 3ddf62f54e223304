"""Auto-PGD (Croce & Hein 2020, arXiv:2003.01690): PGD with momentum and a step size that halves
at checkpoints when progress stalls, restarting from the best point; and its targeted-DLR
ensemble APGD-T. Fooled samples leave the active batch at once (the budget goes to the rest).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..rng import Generators, subset, tile
from ..threat import ThreatModel
from ..util import rows
from .checks import check_batch, check_labels, check_positive_int
from .losses import dlr, get_loss, is_adversarial
from .registry import ATTACKS

Objective = Callable[[Tensor, Tensor], Tensor]  # (logits, row indices) -> per-sample loss
MOMENTUM, RHO = 0.75, 0.75


def checkpoints(steps: int) -> set[int]:
    """The iterations w_j = ceil(p_j * steps): p_0 = 0, p_1 = 0.22, p_j+1 = p_j + max(p_j - p_j-1 - 0.03, 0.06)."""
    prev, cur, out = 0.0, 0.22, set()
    while cur <= 1:
        out.add(math.ceil(round(cur * steps, 6)))
        prev, cur = cur, cur + max(cur - prev - 0.03, 0.06)
    return out - {0}


def _group_done(fooled: Tensor, groups: Tensor | None) -> Tensor:
    """Per row: did this row, or with `groups` any row of its group, succeed."""
    if groups is None:
        return fooled
    done = torch.zeros(int(groups.max()) + 1 if groups.numel() else 0, dtype=torch.int32, device=fooled.device)
    return done.index_add_(0, groups, fooled.to(torch.int32))[groups] > 0


def apgd_run(model: nn.Module, x: Tensor, start: Tensor, threat: ThreatModel, steps: int,
             objective: Objective, success: Objective, groups: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """One APGD run from `start`; returns (per-sample point, fooled flags, best loss).

    The point is the first iterate that fooled the model (`success`), else the best-loss iterate.
    groups: rows with the same id are runs for one sample (stacked targets); all of them stop
    as soon as one succeeds.
    """
    n = x.shape[0]
    out, hit = start.clone(), torch.zeros(n, dtype=torch.bool, device=x.device)
    best_loss = torch.full((n,), -math.inf, device=x.device, dtype=x.dtype)
    act = torch.arange(n, device=x.device)
    marks, last_mark = checkpoints(steps), 0
    cur, prev = start.detach(), start.detach()
    eta = torch.full((n,), 2 * threat.eps, device=x.device, dtype=x.dtype)
    loss_prev = torch.full((n,), -math.inf, device=x.device)
    ups = torch.zeros(n, device=x.device)
    best_at_mark, halved = best_loss.clone(), torch.zeros(n, dtype=torch.bool, device=x.device)
    best_grad = torch.zeros_like(x)
    for k in range(steps + 1):
        probe = cur.clone().requires_grad_(k < steps)
        with torch.set_grad_enabled(k < steps):
            logits = model(probe)
            loss = objective(logits, act)
        fooled = success(logits.detach(), act)
        grad = torch.autograd.grad(loss.sum(), probe)[0] if k < steps else torch.zeros_like(probe)
        loss = loss.detach()
        better = loss > best_loss[act]
        take = better | fooled
        out[act] = torch.where(rows(take, cur), cur, out[act])  # integer indexing: no host sync
        best_loss[act] = torch.where(better, loss, best_loss[act])
        hit[act] = fooled
        if k == steps:
            break
        best_grad[act] = torch.where(rows(better, grad), grad, best_grad[act])
        if k > 0:
            ups = ups + (loss > loss_prev).to(ups.dtype)
        else:
            best_at_mark = loss.clone()
        loss_prev = loss
        if k in marks:
            best_now = best_loss[act]
            halve = (ups < RHO * (k - last_mark)) | (~halved & (best_at_mark >= best_now))
            halved, best_at_mark, ups, last_mark = halve, best_now, torch.zeros_like(ups), k
            eta = torch.where(halve, eta / 2, eta)
            cur = torch.where(rows(halve, cur), out[act], cur)
            prev = torch.where(rows(halve, cur), cur, prev)
            grad = torch.where(rows(halve, cur), best_grad[act], grad)
        keep = ~_group_done(fooled, None if groups is None else groups[act])
        left = int(keep.sum())  # the one host sync per iteration
        if left == 0:
            break
        if left < keep.numel():
            act, cur, prev, grad, eta = act[keep], cur[keep], prev[keep], grad[keep], eta[keep]
            loss_prev, ups, best_at_mark, halved = loss_prev[keep], ups[keep], best_at_mark[keep], halved[keep]
        xs = x[act]
        z = threat.project(cur + rows(eta, cur) * threat.step(grad, 1.0, cur), xs)
        moved = cur + MOMENTUM * (z - cur) + (1 - MOMENTUM) * (cur - prev) if k > 0 else z
        prev, cur = cur, threat.project(moved, xs)
    return out.detach(), hit, best_loss


def _on_rows(fn: Objective, rows: Tensor) -> Objective:
    """fn on a subset of rows: row r of the subset is row rows[r] of the whole."""
    return lambda z, r: fn(z, rows[r])


def _toward(targets: Tensor, labels: Tensor) -> tuple[Objective, Objective]:
    """APGD-T's (objective, success) for one target per row: the targeted DLR toward targets[r], and any
    misclassification of labels[r]."""
    return (lambda z, r: dlr(z, targets[r], True, true_labels=labels[r]),
            lambda z, r: z.argmax(dim=1) != labels[r])


def _validate(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, steps: int, restarts: int) -> Tensor:
    check_batch(x, y, threat)
    check_positive_int("steps", steps)
    check_positive_int("restarts", restarts)
    with torch.no_grad():
        logits = model(x.detach())
    check_labels(y, logits.shape[1])
    return logits


def apgd_batch(model: nn.Module, x: Tensor, labels: Tensor, *, threat: ThreatModel, steps: int, restarts: int,
               objective: Objective, success: Objective, generator: Generators,
               groups: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """APGD with restarts from random points on the samples not yet fooled; (points, fooled).

    groups (optional, one id per row): rows of a group are alternatives for one sample; once one
    succeeds the others stop and skip the later restarts.
    """
    out, hit = x.clone(), torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    best = torch.full((x.shape[0],), -math.inf, device=x.device, dtype=x.dtype)
    with torch.enable_grad():
        for _ in range(restarts):
            free = ~_group_done(hit, groups)
            todo = free.nonzero().flatten()
            if todo.numel() == 0:
                break
            start = threat.random_init(x[todo], subset(generator, free))
            pts, ok, loss = apgd_run(model, x[todo], start, threat, steps, _on_rows(objective, todo),
                                     _on_rows(success, todo), None if groups is None else groups[todo])
            take = ok | (loss > best[todo])
            out[todo[take]], best[todo[take]], hit[todo] = pts[take], loss[take], ok
    return out, hit


@ATTACKS.register("apgd", kind="budget", norms=("linf", "l2", "l1"), needs_grad=True, targeted="optional",
                  paper="Croce & Hein 2020, arXiv:2003.01690", test_params={"steps": 10})
def apgd(model: nn.Module, x: Tensor, y: Tensor, *, threat: ThreatModel, steps: int = 100, restarts: int = 1,
         targeted: bool = False, loss: str = "ce", generator: Generators = None) -> Tensor:
    """Auto-PGD: step size 2 * eps halved at checkpoints when progress stalls, momentum 0.75.

    Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
    parameter-free attacks", arXiv:2003.01690. loss is "ce" or "dlr" (any loss of the table);
    restarts start from fresh random points for the samples not yet fooled. Per sample it returns
    the first iterate that fooled the model, else the best-loss point. L1 uses the sparse step of
    threat.py, not the adaptive-sparsity APGD-L1 of arXiv:2103.01208.
        >>> x_adv = apgd(model, x, y, threat=ThreatModel(Norm.LINF, 8 / 255), generator=g)
    """
    _validate(model, x, y, threat, steps, restarts)
    x, y = x.detach(), y.to(device=x.device, dtype=torch.int64)
    fn = get_loss(loss)
    return apgd_batch(model, x, y, threat=threat, steps=steps, restarts=restarts,
                      objective=lambda z, r: fn(z, y[r], targeted),
                      success=lambda z, r: is_adversarial(z, y[r], targeted), generator=generator)[0]


def apgd_targeted_batch(model: nn.Module, x: Tensor, y: Tensor, clean_logits: Tensor, *, threat: ThreatModel,
                        steps: int, restarts: int, target_classes: int, generator: Generators,
                        stack: bool | None = None) -> tuple[Tensor, Tensor]:
    """APGD-T on (x, y): targeted DLR toward each of the top classes; (points, fooled).

    stack: run all targets at once as one batch of (sample, target) rows, a sample's rows
    stopping together when one succeeds; None means stacked on a GPU, where a few hundred hard
    samples leave it idle, and one target after another on a CPU, where that order spends no
    work on targets after the one that succeeds.
    """
    out, hit = x.clone(), clean_logits.argmax(dim=1) != y
    order = clean_logits.scatter(1, y[:, None], -math.inf).argsort(dim=1, descending=True)
    count = min(target_classes, clean_logits.shape[1] - 1)
    if stack or (stack is None and x.is_cuda):
        todo = (~hit).nonzero().flatten()
        m = todo.numel()
        if m == 0:
            return out, hit
        xs, ys = x[todo].repeat(count, *([1] * (x.dim() - 1))), y[todo].repeat(count)
        ts = order[todo, :count].T.reshape(-1)  # row j * m + i: sample todo[i], target j
        rows = torch.arange(m, device=x.device)
        objective, success = _toward(ts, ys)
        pts, ok = apgd_batch(model, xs, ys, threat=threat, steps=steps, restarts=restarts, objective=objective,
                             success=success, generator=tile(subset(generator, ~hit), count, "apgd-t targets"),
                             groups=rows.repeat(count))
        ok = ok.view(count, m)
        first = ok.to(torch.int32).argmax(dim=0)  # the first target that succeeded (0 when none did)
        out[todo], hit[todo] = pts[first * m + rows], ok.any(dim=0)
        return out, hit
    for j in range(count):
        todo = (~hit).nonzero().flatten()
        if todo.numel() == 0:
            break
        xs, ys, ts = x[todo], y[todo], order[todo, j]
        objective, success = _toward(ts, ys)
        pts, ok = apgd_batch(model, xs, ys, threat=threat, steps=steps, restarts=restarts, objective=objective,
                             success=success, generator=subset(generator, ~hit))
        out[todo], hit[todo] = pts, ok
    return out, hit


@ATTACKS.register("apgd-t", kind="budget", norms=("linf", "l2", "l1"), needs_grad=True, targeted="never",
                  paper="Croce & Hein 2020, arXiv:2003.01690", test_params={"steps": 5, "target_classes": 2})
def apgd_t(model: nn.Module, x: Tensor, y: Tensor, *, threat: ThreatModel, steps: int = 100, restarts: int = 1,
           target_classes: int = 9, stack: bool | None = None, generator: Generators = None) -> Tensor:
    """APGD-T: APGD on the targeted DLR loss toward each of the `target_classes` most likely wrong
    classes (by clean logits) in turn, each run only on the samples not yet misclassified.
    stack: all targets as one batch (default: on a GPU only); see apgd_targeted_batch.

    Croce & Hein, arXiv:2003.01690 (the targeted version of AutoAttack). y holds the true labels;
    the targets are chosen here. Success is any misclassification.
        >>> x_adv = apgd_t(model, x, y, threat=ThreatModel(Norm.LINF, 8 / 255), generator=g)
    """
    logits = _validate(model, x, y, threat, steps, restarts)
    check_positive_int("target_classes", target_classes)
    x, y = x.detach(), y.to(device=x.device, dtype=torch.int64)
    return apgd_targeted_batch(model, x, y, logits, threat=threat, steps=steps, restarts=restarts,
                               target_classes=target_classes, generator=generator, stack=stack)[0]


__all__ = ["apgd", "apgd_t", "checkpoints"]
