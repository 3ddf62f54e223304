"""DeepFool (L2 and Linf): step to the nearest linearized class boundary until the label flips."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..rng import Generators
from ..threat import Norm, ThreatModel
from ..util import rows
from .checks import check_labels, check_positive, check_positive_int
from .minimal import Best, fooled, prepare
from .registry import ATTACKS


@ATTACKS.register("deepfool", kind="minimal", norms=("l2", "linf"), needs_grad=True, targeted="never",
                  paper="Moosavi-Dezfooli et al. 2016, arXiv:1511.04599", test_params={"steps": 20},
                  renamed={"candidates": ("target_classes", lambda candidates: candidates - 1)})
def deepfool(model: nn.Module, x: Tensor, y: Tensor, *, threat: ThreatModel | None = None, steps: int = 50,
             overshoot: float = 0.02, target_classes: int = 9, generator: Generators = None) -> Tensor:
    """DeepFool: move each sample onto the closest boundary of the model linearized at the iterate.

    Moosavi-Dezfooli, Fawzi, Frossard, "DeepFool: a simple and accurate method to fool deep neural
    networks", arXiv:1511.04599. Untargeted. Per step, one forward pass and `target_classes` backward
    passes (the gradients of Z_k - Z_y for the `target_classes` classes other than y ranked highest on
    the clean input); fooled samples leave the batch (when many were just fooled, the rest is forwarded
    again, which costs less than backward passes through the fooled ones). The total step is scaled by
    1 + overshoot and the
    iterate clipped into the box. Norm l2 (default) or linf (threat.norm). Unfooled samples
    come back unchanged. `generator` is accepted for the common signature (DeepFool is deterministic).
        >>> x_adv = deepfool(model, x, y, threat=ThreatModel(Norm.L2, math.inf), steps=50)
        >>> norms = (x_adv - x).flatten(1).norm(dim=1)
    """
    threat, x, y = prepare(x, y, threat, "deepfool", (Norm.L2, Norm.LINF))
    steps = check_positive_int("steps", steps)
    target_classes = check_positive_int("target_classes", target_classes)
    scale = 1.0 + check_positive("overshoot", overshoot, allow_zero=True)
    best = Best(x, threat)
    total = torch.zeros_like(x)
    x_adv = x.clone()
    active = torch.arange(x.shape[0], device=x.device)
    classes = None
    for step in range(steps + 1):
        with torch.set_grad_enabled(step < steps):
            xa = x_adv[active].requires_grad_(step < steps)
            logits = model(xa)
        if classes is None:
            check_labels(y, logits.shape[1])
            others = logits.detach().scatter(1, y[:, None], float("-inf"))
            classes = others.topk(min(target_classes, logits.shape[1] - 1), dim=1).indices
        hit = fooled(logits.detach(), y[active], False)
        best.update(active, xa.detach(), hit)
        if step == steps or bool(hit.all()):
            break
        graph_rows, active = active, active[~hit]
        if int(hit.sum()) * (classes.shape[1] + 1) > hit.numel():  # cheaper: forward the rest again
            with torch.enable_grad():
                xa = x_adv[active].requires_grad_(True)
                logits = model(xa)
            graph_rows, hit = active, hit[~hit]
        with torch.enable_grad():
            diffs = logits.gather(1, classes[graph_rows]) - logits.gather(1, y[graph_rows, None])
            grads = _class_gradients(diffs, xa, ~hit)
        x_adv[active] = _step(threat.norm, x[active], total, active, diffs.detach()[~hit], grads, scale, threat)
    return best.result()


def _class_gradients(diffs: Tensor, xa: Tensor, keep: Tensor) -> Tensor:
    """Gradients of every column of diffs w.r.t. xa for the kept rows: shape (b, k, *x.shape[1:]).

    Samples are independent, so the gradient of a column's sum over the batch is the per-sample
    gradient; the columns share one forward pass (retain_graph).
    """
    k = diffs.shape[1]
    grads = [torch.autograd.grad(diffs[:, j].sum(), xa, retain_graph=j < k - 1)[0][keep] for j in range(k)]
    return torch.stack(grads, dim=1)


def _step(norm: Norm, xs: Tensor, total: Tensor, active: Tensor, f: Tensor, grads: Tensor, scale: float,
          threat: ThreatModel) -> Tensor:
    """Add the step to the closest linearized boundary to `total` (in place); the new iterate."""
    flat = grads.flatten(2)
    dual = flat.norm(dim=2) if norm is Norm.L2 else flat.abs().sum(dim=2)
    dual = dual.clamp_min(1e-12)
    pick = (f.abs() / dual).argmin(dim=1)
    row = torch.arange(pick.shape[0], device=pick.device)
    w, size = grads[row, pick], (f[row, pick].abs() + 1e-4) / dual[row, pick]
    direction = w / rows(dual[row, pick], w) if norm is Norm.L2 else w.sign()
    total[active] += rows(size, w) * direction
    return threat.clamp(xs + scale * total[active])
