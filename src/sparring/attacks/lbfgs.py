"""Box-constrained L-BFGS (Szegedy et al.): L-BFGS-B on ||r||^2 + c * loss, line search over c."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..rng import Generators
from ..threat import Norm, ThreatModel
from .checks import check_labels, check_positive, check_positive_int
from .minimal import Best, ConstSearch, fooled, prepare
from .registry import ATTACKS


@ATTACKS.register("lbfgs", kind="minimal", norms=("l2",), needs_grad=True, targeted="optional",
                  paper="Szegedy et al. 2014, arXiv:1312.6199", batch_dependent=True,
                  test_params={"steps": 20, "search_steps": 3, "initial_const": 10.0})
def lbfgs(model: nn.Module, x: Tensor, y: Tensor, *, threat: ThreatModel | None = None, steps: int = 100,
          search_steps: int = 10, initial_const: float = 1e-2, targeted: bool = False,
          generator: Generators = None) -> Tensor:
    """Box-constrained L-BFGS: minimize ||r||_2^2 + c * loss(x + r) subject to x + r in the box,
    for the smallest c (per sample) whose minimizer is adversarial.

    Szegedy et al., "Intriguing properties of neural networks", arXiv:1312.6199 (the paper writes
    c * |r| + loss and searches the largest c; dividing by c gives this form). The loss is the
    cross-entropy of the target (targeted=True, y = targets, as in the paper) or, untargeted,
    -log(1 - p_y), the cross-entropy of "any class but y" (convex for a linear model, unlike -CE,
    whose minimizer jumps past the boundary). scipy's L-BFGS-B with per-coordinate bounds runs
    on the whole batch at once (the objective is a sum of per-sample terms). Args: steps (L-BFGS-B
    iterations per constant, at most 2 * steps evaluations of one forward and backward pass each),
    search_steps (constants tried: x10 from initial_const until success, then bisection). Every
    evaluated point is a candidate; the smallest adversarial is returned (the input where none).
        >>> x_adv = lbfgs(model, x, targets, targeted=True)
        >>> norms = (x_adv - x).flatten(1).norm(dim=1)
    """
    from scipy.optimize import Bounds, minimize

    threat, x, y = prepare(x, y, threat, "lbfgs", (Norm.L2,))
    steps = check_positive_int("steps", steps)
    search_steps = check_positive_int("search_steps", search_steps)
    initial_const = check_positive("initial_const", initial_const)
    best = Best(x, threat)
    search = ConstSearch(x.shape[0], initial_const, x.device)
    everyone = torch.arange(x.shape[0], device=x.device)
    start = x.double().cpu().numpy().ravel()
    box = Bounds(np.full_like(start, threat.bounds[0]), np.full_like(start, threat.bounds[1]))
    checked = False

    def objective(point: np.ndarray, const: Tensor, success: Tensor) -> tuple[float, np.ndarray]:
        nonlocal checked
        with torch.enable_grad():
            x_adv = torch.from_numpy(point).to(device=x.device, dtype=x.dtype).view_as(x).requires_grad_(True)
            logits = model(x_adv)
            if not checked:
                check_labels(y, logits.shape[1])
                checked = True
            total = (x_adv - x).flatten(1).pow(2).sum(1) + const * _loss(logits, y, targeted)
            (grad,) = torch.autograd.grad(total.sum(), x_adv)
        hit = fooled(logits.detach(), y, targeted)
        best.update(everyone, x_adv.detach(), hit)
        success.copy_(hit)  # the search judges c by the last point, where L-BFGS-B stops
        return float(total.detach().sum()), grad.double().cpu().numpy().ravel()

    for _ in range(search_steps):
        success = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        const = search.const.to(x.dtype)
        minimize(objective, start, args=(const, success), jac=True, method="L-BFGS-B", bounds=box,
                 options={"maxiter": steps, "maxfun": 2 * steps})
        search.update(success)
    return best.result()


def _loss(logits: Tensor, y: Tensor, targeted: bool) -> Tensor:
    """CE of the target, or -log(1 - p_y) = logsumexp(all) - logsumexp(all but y)."""
    if targeted:
        return F.cross_entropy(logits, y, reduction="none")
    return logits.logsumexp(dim=1) - logits.scatter(1, y[:, None], float("-inf")).logsumexp(dim=1)
