"""Carlini & Wagner L2: Adam in tanh space on ||delta||^2 + c * hinge(logit gap), binary search on c."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..rng import Generators
from ..threat import Norm, ThreatModel
from ._checks import check_labels, check_positive, check_positive_int
from ._minimal import Best, ConstSearch, gap, prepare
from .registry import ATTACKS

_BETA1, _BETA2, _ADAM_EPS = 0.9, 0.999, 1e-8
_SQUASH = 0.95  # w0 = atanh(0.95 * x rescaled to [-1, 1]): see the docstring


@ATTACKS.register("cw-l2", kind="minimal", norms=("l2",), needs_grad=True, targeted="optional",
                  paper="Carlini & Wagner 2017, arXiv:1608.04644",
                  test_params={"steps": 30, "search_steps": 3, "initial_const": 10.0, "step_size": 0.05})
def cw_l2(model: nn.Module, x: Tensor, y: Tensor, *, threat: ThreatModel | None = None, steps: int = 1000,
          search_steps: int = 9, initial_const: float = 1e-2, step_size: float = 0.01, confidence: float = 0.0,
          abort_early: bool = True, targeted: bool = False, generator: Generators = None) -> Tensor:
    """Carlini-Wagner L2: minimize ||delta||^2 + c * max(gap + confidence, 0) with Adam over w,
    where x + delta = clip(x + (hi - lo) / 2 * (tanh(w) - tanh(w0))), w0 = atanh(0.95 * x rescaled
    to [-1, 1]): the paper's tanh change of variables for the box, written relative to x so that
    w0 gives x exactly. The paper's code squashes by 1 - 1e-6, which puts saturated pixels (most of
    MNIST) ~7 units from where tanh has slope, hundreds of Adam steps; with 0.95 they move at once,
    at the cost of reaching at most 97.5% of the way to the opposite bound. Per-sample binary
    search over c.

    Carlini & Wagner, "Towards evaluating the robustness of neural networks", arXiv:1608.04644.
    gap is Z_y - max_{j != y} Z_j (untargeted) or max_{j != t} Z_j - Z_t (targeted, y = targets).
    Args: steps (Adam steps per constant, one forward and backward pass each), search_steps
    (constants tried, starting at initial_const: x10 until success, then bisection), step_size
    (Adam learning rate), confidence (the paper's kappa), abort_early (a sample stops when its
    loss fell by less than 0.01% over steps / 10 steps). Returns the smallest adversarial met
    (the input where none). Deterministic; `generator` is accepted for the common signature.
        >>> x_adv = cw_l2(model, x, y, steps=1000, search_steps=9)
        >>> norms = (x_adv - x).flatten(1).norm(dim=1)
    """
    threat, x, y = prepare(x, y, threat, "cw-l2", (Norm.L2,))
    steps = check_positive_int("steps", steps)
    search_steps = check_positive_int("search_steps", search_steps)
    initial_const = check_positive("initial_const", initial_const)
    step_size = check_positive("step_size", step_size)
    confidence = check_positive("confidence", confidence, allow_zero=True)
    lo, hi = threat.bounds
    mid, half = (hi + lo) / 2, (hi - lo) / 2
    w0 = torch.atanh(((x - mid) / half).clamp(-1, 1) * _SQUASH)
    t0 = torch.tanh(w0)  # x + half * (tanh(w) - t0) is exactly x at w = w0
    best = Best(x, threat)
    search = ConstSearch(x.shape[0], initial_const, x.device)
    check = max(steps // 10, 1)
    for round_ in range(search_steps):
        success = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        active = torch.arange(x.shape[0], device=x.device)
        w, m, v = w0.clone(), torch.zeros_like(w0), torch.zeros_like(w0)
        const = search.const.to(x.dtype)
        previous = torch.full((x.shape[0],), float("inf"), device=x.device, dtype=x.dtype)
        for step in range(steps):
            with torch.enable_grad():
                w.requires_grad_(True)
                x_adv = threat.clamp(x[active] + half * (torch.tanh(w) - t0[active]))
                logits = model(x_adv)
                if round_ == 0 and step == 0:
                    check_labels(y, logits.shape[1])
                g = gap(logits, y[active], targeted)
                loss = (x_adv - x[active]).flatten(1).pow(2).sum(1) + const[active] * (g + confidence).clamp_min(0)
                (grad,) = torch.autograd.grad(loss.sum(), w)
            hit = g.detach() < -confidence
            best.update(active, x_adv.detach(), hit)
            success[active] |= hit
            w = w.detach()
            m.mul_(_BETA1).add_(grad, alpha=1 - _BETA1)
            v.mul_(_BETA2).addcmul_(grad, grad, value=1 - _BETA2)
            m_hat, v_hat = m / (1 - _BETA1 ** (step + 1)), v / (1 - _BETA2 ** (step + 1))
            w = w - step_size * m_hat / (v_hat.sqrt() + _ADAM_EPS)
            if abort_early and (step + 1) % check == 0:
                loss = loss.detach()
                go_on = loss <= previous[active] * 0.9999
                previous[active] = loss
                if not bool(go_on.all()):
                    active, w, m, v = active[go_on], w[go_on], m[go_on], v[go_on]
                    if active.numel() == 0:
                        break
        search.update(success)
    return best.result()
