"""Shared plumbing of the minimal-perturbation attacks (CW-L2, DDN, L-BFGS, DeepFool, JSMA).

`prepare` validates at the boundary and resolves the threat model; `Best` keeps, per sample,
the smallest adversarial iterate seen so far (in the threat model's norm) and builds the result:
that iterate, or the unchanged input for a sample that was never fooled (or, when the caller
passes a finite eps, whose smallest adversarial lies outside the eps-ball).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import InputError
from ..threat import Norm, ThreatModel, lp_norm
from ..util import rows
from .checks import check_batch


def prepare(x: Tensor, y: Tensor, threat: ThreatModel | None, name: str,
            norms: tuple[Norm, ...]) -> tuple[ThreatModel, Tensor, Tensor]:
    """Default threat (first norm, unbounded), norm support, batch checks; (threat, x, y)."""
    threat = ThreatModel(norms[0], math.inf) if threat is None else threat
    if threat.norm not in norms:
        supported = ", ".join(n.value for n in norms)
        raise InputError(f"{name} supports norm {supported}, got {threat.norm.value}")
    check_batch(x, y, threat)
    return threat, x.detach(), y.to(device=x.device, dtype=torch.int64)


MARGIN = 1e-5  # relative to the largest |logit| (plus 1)


def fooled(logits: Tensor, y: Tensor, targeted: bool) -> Tensor:
    """Prediction == target (targeted) or != label (untargeted), by a margin.

    The winning class must lead by MARGIN * (1 + max |logit|): a point a hair past the boundary
    can flip back when the same model is re-run in another batch shape (GPU kernels round
    differently), and a minimal attack's answer must survive that re-check.
    """
    tol = MARGIN * (1 + logits.abs().amax(dim=1))
    own = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    return own - others > tol if targeted else others - own > tol


class Best:
    """The smallest adversarial found so far per sample, measured in `threat.norm`."""

    def __init__(self, x: Tensor, threat: ThreatModel) -> None:
        self.x, self.threat = x, threat
        self.adv = x.clone()
        self.norm = torch.full((x.shape[0],), math.inf, device=x.device, dtype=torch.float64)

    def update(self, idx: Tensor, x_new: Tensor, hit: Tensor) -> Tensor:
        """Offer candidates x_new for the rows idx, `hit` marking those that fool the model.

        Returns the mask (over idx) of candidates that became the new best.
        """
        norms = lp_norm(x_new - self.x[idx], self.threat.norm).double()
        better = hit & (norms < self.norm[idx])
        if bool(better.any()):
            sel = idx[better]
            self.adv[sel] = x_new[better].detach()
            self.norm[sel] = norms[better]
        return better

    @property
    def found(self) -> Tensor:
        return torch.isfinite(self.norm)

    def result(self) -> Tensor:
        """Best adversarials; the input itself where none was found (or none within eps)."""
        keep = self.found
        if self.threat.bounded:
            keep = keep & (self.norm <= self.threat.eps * (1 + 1e-5) + 1e-6)
        return torch.where(rows(keep, self.x), self.adv, self.x).detach()


class ConstSearch:
    """Per-sample search for the smallest trade-off constant c whose run succeeds (CW, L-BFGS):
    c grows tenfold until a run succeeds, then bisects between the last failure and success."""

    def __init__(self, n: int, initial: float, device: torch.device) -> None:
        self.const = torch.full((n,), float(initial), dtype=torch.float64, device=device)
        self.lower = torch.zeros_like(self.const)
        self.upper = torch.full_like(self.const, math.inf)

    def update(self, success: Tensor) -> None:
        """Record which samples succeeded with the current constants and choose the next ones."""
        self.upper = torch.where(success, self.upper.minimum(self.const), self.upper)
        self.lower = torch.where(success, self.lower, self.lower.maximum(self.const))
        bounded = torch.isfinite(self.upper)
        self.const = torch.where(bounded, (self.lower + self.upper) / 2, self.const * 10)

    def update_rows(self, idx: Tensor, success: Tensor) -> None:
        """`update` for the samples idx only (their runs ended; the others go on)."""
        const, lower, upper = self.const[idx], self.lower[idx], self.upper[idx]
        upper = torch.where(success, upper.minimum(const), upper)
        lower = torch.where(success, lower, lower.maximum(const))
        self.const[idx] = torch.where(torch.isfinite(upper), (lower + upper) / 2, const * 10)
        self.lower[idx], self.upper[idx] = lower, upper
