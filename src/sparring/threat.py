"""Norm geometry: the only module that knows what an Lp ball looks like.

ThreatModel(norm, eps, bounds) projects onto the eps-ball intersected with the box, draws a
uniform random start inside the ball, gives the steepest-ascent step for a gradient, and
measures distances. eps may be math.inf for unbounded (minimal-perturbation) attacks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import torch
from torch import Tensor

from .errors import InputError
from .rng import Generators, normal, uniform
from .util import rows


class Norm(str, Enum):
    """The perturbation norms sparring attacks in."""

    L0 = "l0"
    L1 = "l1"
    L2 = "l2"
    LINF = "linf"

    @classmethod
    def parse(cls, value: str | Norm) -> Norm:
        """Accept "linf"/"inf"/"Linf", "l2"/"2", "l1"/"1", "l0"/"0"."""
        if isinstance(value, Norm):
            return value
        text = str(value).strip().lower().replace("_", "")
        aliases = {"linf": cls.LINF, "inf": cls.LINF, "l2": cls.L2, "2": cls.L2, "l1": cls.L1, "1": cls.L1,
                   "l0": cls.L0, "0": cls.L0}
        if text not in aliases:
            raise InputError(f"unknown norm: expected one of l0, l1, l2, linf, got {value!r}")
        return aliases[text]


def _flat(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1)


L0_TOLERANCE = 1e-6


def lp_norm(delta: Tensor, norm: Norm) -> Tensor:
    """Per-sample Lp norm of a batch of perturbations (shape (B,)); L0 counts |d| > 1e-6."""
    flat = _flat(delta)
    if norm is Norm.L0:
        return (flat.abs() > L0_TOLERANCE).sum(dim=1).to(flat.dtype)
    if norm is Norm.LINF:
        return flat.abs().amax(dim=1)
    if norm is Norm.L2:
        return flat.norm(p=2, dim=1)
    return flat.abs().sum(dim=1)


def _project_l1(delta: Tensor, eps: float) -> Tensor:
    """Euclidean projection onto the L1 ball (Duchi et al. 2008), batched."""
    flat = _flat(delta)
    inside = flat.abs().sum(dim=1) <= eps
    if bool(inside.all()):
        return delta
    mags = flat.abs()
    sorted_mags, _ = mags.sort(dim=1, descending=True)
    cumsum = sorted_mags.cumsum(dim=1)
    ranks = torch.arange(1, flat.shape[1] + 1, device=flat.device, dtype=flat.dtype)
    cond = sorted_mags - (cumsum - eps) / ranks > 0
    rho = cond.to(flat.dtype).mul(ranks).argmax(dim=1, keepdim=True)
    theta = (cumsum.gather(1, rho) - eps) / (rho + 1).to(flat.dtype)
    projected = flat.sign() * (mags - theta).clamp_min(0)
    out = torch.where(inside.unsqueeze(1), flat, projected)
    return out.reshape(delta.shape)


def _no_l0(norm: Norm, what: str) -> None:
    if norm is Norm.L0:
        raise InputError(f"{what} is not supported for l0: expected norm l1, l2 or linf, got l0")


@dataclass(frozen=True)
class ThreatModel:
    """An Lp ball of radius eps around each input, intersected with the box `bounds`.

    Example:
        >>> threat = ThreatModel(Norm.LINF, 8 / 255)
        >>> x_adv = threat.project(x + delta, x)
    """

    norm: Norm
    eps: float
    bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "norm", Norm.parse(self.norm))
        eps = float(self.eps)
        if math.isnan(eps) or eps < 0:
            raise InputError(f"eps must be >= 0, got {self.eps!r}")
        object.__setattr__(self, "eps", eps)
        lo, hi = (float(b) for b in self.bounds)
        if not lo < hi:
            raise InputError(f"bounds must be (low, high) with low < high, got {self.bounds!r}")
        object.__setattr__(self, "bounds", (lo, hi))

    @property
    def bounded(self) -> bool:
        return math.isfinite(self.eps)

    def clamp(self, x: Tensor) -> Tensor:
        """Clip into the box."""
        return x.clamp(self.bounds[0], self.bounds[1])

    def project(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """Project x_adv onto {x + d : ||d|| <= eps} and then into the box.

        Clipping into the box moves each coordinate of d toward 0, so the result stays in the ball.
        """
        _no_l0(self.norm, "project")
        if not self.bounded:
            return self.clamp(x_adv)
        delta = x_adv - x
        if self.norm is Norm.LINF:
            delta = delta.clamp(-self.eps, self.eps)
        elif self.norm is Norm.L2:
            norms = lp_norm(delta, Norm.L2)
            factor = (self.eps / norms.clamp_min(1e-12)).clamp(max=1.0)
            delta = delta * rows(factor, delta)
        else:
            delta = _project_l1(delta, self.eps)
        return self.clamp(x + delta)

    def random_init(self, x: Tensor, generator: Generators) -> Tensor:
        """A point drawn uniformly from the eps-ball around x (then clipped into the box)."""
        _no_l0(self.norm, "random_init")
        if not self.bounded:
            raise InputError("random_init needs a finite eps, got inf")
        if self.norm is Norm.LINF:
            delta = (uniform(generator, x) * 2 - 1) * self.eps
        else:
            if self.norm is Norm.L2:
                direction = normal(generator, x)
            else:  # Laplace coordinates give a uniform direction on the L1 sphere
                direction = -torch.log(uniform(generator, x).clamp_min(1e-12)) * (2 * (uniform(generator, x) < 0.5) - 1)
            direction = direction / rows(lp_norm(direction, self.norm).clamp_min(1e-12), x)
            dim = direction[0].numel()
            radius = uniform(generator, x[:, :1].flatten(1)[:, :1]).reshape(-1) ** (1.0 / dim) * self.eps
            delta = direction * rows(radius, x)
        return self.clamp(x + delta)

    def step(self, grad: Tensor, step_size: float, x_adv: Tensor | None = None) -> Tensor:
        """The steepest-ascent step of length step_size (in this norm) for `grad`.

        Linf: sign; L2: normalized gradient; L1: the sparse step of Tramer & Boneh 2019
        (arXiv:1904.13000) on the top 1% coordinates by |grad|, skipping coordinates already at
        the bound they would be pushed past.
        """
        _no_l0(self.norm, "step")
        if self.norm is Norm.LINF:
            return step_size * grad.sign()
        if self.norm is Norm.L2:
            norms = lp_norm(grad, Norm.L2).clamp_min(1e-12)
            return step_size * grad / rows(norms, grad)
        g = grad
        if x_adv is not None:
            stuck = ((x_adv <= self.bounds[0]) & (g < 0)) | ((x_adv >= self.bounds[1]) & (g > 0))
            g = g.masked_fill(stuck, 0.0)
        flat = _flat(g).abs()
        k = max(1, int(round(0.01 * flat.shape[1])))
        threshold = flat.topk(k, dim=1).values[:, -1:]
        mask = (flat >= threshold) & (flat > 0)
        direction = (_flat(g).sign() * mask).reshape(g.shape)
        counts = mask.sum(dim=1).clamp_min(1).to(g.dtype)
        return step_size * direction / rows(counts, g)

    def distance(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """Per-sample ||x_adv - x|| in this norm."""
        return lp_norm(x_adv - x, self.norm)
