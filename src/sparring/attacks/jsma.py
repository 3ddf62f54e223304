"""Jacobian-based saliency map attack (L0): saturate the most salient pair of features per step."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..rng import Generators
from ..threat import Norm, ThreatModel
from .checks import check_labels, check_positive
from .minimal import Best, fooled, prepare
from .registry import ATTACKS

_PAIR_BUDGET = 2**23  # pair scores held at once (elements), whatever the batch size


@ATTACKS.register("jsma", kind="minimal", norms=("l0",), needs_grad=True, targeted="optional",
                  paper="Papernot et al. 2016, arXiv:1511.07528", test_params={"max_fraction": 0.5})
def jsma(model: nn.Module, x: Tensor, y: Tensor, *, threat: ThreatModel | None = None, max_fraction: float = 0.1,
         increase: bool = True, targeted: bool = False, generator: Generators = None) -> Tensor:
    """JSMA: per step, the pair of features (p, q) with alpha = dZ_t/dx_p + dZ_t/dx_q > 0 and
    beta = sum_{j != t} (dZ_j/dx_p + dZ_j/dx_q) < 0 maximizing alpha * |beta| is pushed to the
    upper bound (increase=True, the paper's theta = +1; the lower bound with increase=False,
    signs flipped) and leaves the search domain, until the goal is met or max_fraction (the
    paper's gamma) of the features changed.

    Papernot et al., "The limitations of deep learning in adversarial settings", arXiv:1511.07528.
    Saliency on logits, one forward and two backward passes per step. targeted=True (the paper):
    y holds target classes. targeted=False (default, an extension): the target of each step is
    the class ranked highest after the label, and success is any class but y. A sample with no
    admissible pair left stops; unfooled samples come back unchanged. Features are the input's
    coordinates (channels count separately). Deterministic; `generator` is accepted for the
    common signature.
        >>> x_adv = jsma(model, x, targets, targeted=True, max_fraction=0.1)
        >>> changed = ((x_adv - x).abs() > 1e-6).flatten(1).sum(dim=1)
    """
    threat, x, y = prepare(x, y, threat, "jsma", (Norm.L0,))
    max_fraction = check_positive("max_fraction", max_fraction)
    features = x[0].numel()
    rounds = int(max_fraction * features) // 2
    if max_fraction > 1 or rounds < 1:
        raise InputError(f"max_fraction must allow one pair of the {features} features and be <= 1, "
                         f"got {max_fraction}")
    lo, hi = threat.bounds
    goal, sign = (hi, 1.0) if increase else (lo, -1.0)
    best = Best(x, threat)
    x_adv = x.flatten(1).clone()
    domain = x_adv < hi if increase else x_adv > lo
    active = torch.arange(x.shape[0], device=x.device)
    for step in range(rounds + 1):
        with torch.set_grad_enabled(step < rounds):
            xa = x_adv[active].view(-1, *x.shape[1:]).requires_grad_(step < rounds)
            logits = model(xa)
        if step == 0:
            check_labels(y, logits.shape[1])
        hit = fooled(logits.detach(), y[active], targeted)
        best.update(active, xa.detach(), hit)
        if step == rounds or bool(hit.all()):
            break
        target = y[active] if targeted else logits.detach().scatter(1, y[active, None], float("-inf")).argmax(1)
        with torch.enable_grad():
            (own,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), xa, retain_graph=True)
            (every,) = torch.autograd.grad(logits.sum(), xa)
        alpha, beta = sign * own.flatten(1)[~hit], sign * (every - own).flatten(1)[~hit]
        active = active[~hit]
        pairs = _best_pairs(alpha, beta, domain[active])
        stuck = pairs[:, 0] < 0
        chosen, pairs = active[~stuck], pairs[~stuck]
        for col in (0, 1):
            x_adv[chosen, pairs[:, col]] = goal
            domain[chosen, pairs[:, col]] = False
        active = chosen
        if active.numel() == 0:
            break
    return best.result()


def _best_pairs(alpha: Tensor, beta: Tensor, domain: Tensor) -> Tensor:
    """Per row, the admissible pair (p, q), p != q, both in the domain, maximizing
    -(alpha_p + alpha_q) * (beta_p + beta_q) with alpha sum > 0 and beta sum < 0; (-1, -1) if none."""
    n = alpha.shape[1]
    out = torch.full((alpha.shape[0], 2), -1, dtype=torch.int64, device=alpha.device)
    eye = torch.eye(n, dtype=torch.bool, device=alpha.device)
    chunk = max(1, _PAIR_BUDGET // (n * n))
    for start in range(0, alpha.shape[0], chunk):
        a, b, d = (t[start:start + chunk] for t in (alpha, beta, domain))
        a2 = a[:, :, None] + a[:, None, :]
        b2 = b[:, :, None] + b[:, None, :]
        ok = (a2 > 0) & (b2 < 0) & d[:, :, None] & d[:, None, :] & ~eye
        score = torch.where(ok, -a2 * b2, torch.tensor(-1.0, dtype=a2.dtype, device=a2.device)).flatten(1)
        value, flat = score.max(dim=1)
        found = value >= 0
        out[start:start + chunk] = torch.where(found[:, None], torch.stack((flat // n, flat % n), dim=1), -1)
    return out
