"""Expectation over transformation (EOT, Athalye et al. 2018, arXiv:1707.07397): attacks that
maximize the expected loss over random print-and-photo-like transformations of their output."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from ..image import gaussian_kernels, separable_blur
from ..rng import Generators, SampleGenerators, normal, uniform
from ..threat import Norm, ThreatModel
from .checks import check_batch, check_labels, check_positive_int
from .pgd import pgd
from .registry import ATTACKS

PRESETS: dict[str, dict[str, Any]] = {"none": {}, "physical": {  # print-and-photo
    "rotation": 15.0, "scale": (0.9, 1.1), "translate": 0.1, "brightness": 0.1, "contrast": (0.8, 1.2),
    "blur": (0.0, 1.0), "noise": 0.03}}


def _pair(name: str, value: float | tuple[float, float], center: float) -> tuple[float, float]:
    lo, hi = (center - float(value), center + float(value)) if isinstance(value, int | float) else map(float, value)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise InputError(f"{name} must be a number >= 0 or a (low, high) pair, got {value!r}")
    return lo, hi


class Transform(nn.Module):
    """Random differentiable image transformations, one independent draw per sample and call.

    rotation (degrees, +-), scale (low, high), translate (fraction of the side, +-), brightness
    (additive, +-), contrast (low, high, around each image's mean), blur (Gaussian sigma range
    in pixels), noise (std of additive Gaussian noise), levels (straight-through quantization to
    that many grey levels, JPEG-like), then clipping into bounds. All randomness comes from the
    generator passed at call time (torch.Generator or SampleGenerators); gradients reach x.
        >>> t = Transform(**PRESETS["physical"])
        >>> seen = t(x, torch.Generator().manual_seed(0))
    """

    def __init__(self, *, rotation: float = 0.0, scale: tuple[float, float] = (1.0, 1.0), translate: float = 0.0,
                 brightness: float = 0.0, contrast: tuple[float, float] = (1.0, 1.0),
                 blur: tuple[float, float] = (0.0, 0.0), noise: float = 0.0, levels: int | None = None,
                 bounds: tuple[float, float] = (0.0, 1.0), padding: str = "zeros") -> None:
        super().__init__()
        spec: dict[str, tuple[float | tuple[float, float], float]] = {
            "rotation": (rotation, 0.0), "scale": (scale, 1.0), "tx": (translate, 0.0), "ty": (translate, 0.0),
            "brightness": (brightness, 0.0), "contrast": (contrast, 1.0), "blur": (blur, 0.0)}
        self.ranges = {k: _pair(k, value, center) for k, (value, center) in spec.items()}
        if self.ranges["scale"][0] <= 0 or self.ranges["blur"][0] < 0 or not 0 <= float(noise) < math.inf:
            raise InputError(f"expected scale > 0, blur >= 0 and noise >= 0, got {scale}, {blur}, {noise}")
        levels = None if levels is None else check_positive_int("levels", levels, minimum=2)
        if padding not in ("zeros", "border", "reflection"):
            raise InputError(f"padding must be zeros, border or reflection, got {padding!r}")
        self.noise, self.levels, self.padding = float(noise), levels, padding
        self.bounds = ThreatModel(Norm.LINF, math.inf, bounds).bounds

    def forward(self, x: Tensor, generator: Generators) -> Tensor:
        """A fresh random transformation of every image of x (B, C, H, W)."""
        if generator is None:
            raise InputError("Transform needs a generator (torch.Generator or SampleGenerators), got None")
        u = uniform(generator, x.new_empty(x.shape[0], len(self.ranges)))
        p = {k: lo + (hi - lo) * u[:, i] for i, (k, (lo, hi)) in enumerate(self.ranges.items())}
        if any(self.ranges[k] != (c, c) for k, c in (("rotation", 0.0), ("scale", 1.0), ("tx", 0.0))):
            angle = p["rotation"] * math.pi / 180
            cos, sin = angle.cos() / p["scale"], angle.sin() / p["scale"]
            theta = torch.stack([torch.stack([cos, -sin, 2 * p["tx"]], 1), torch.stack([sin, cos, 2 * p["ty"]], 1)], 1)
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode=self.padding, align_corners=False)
        view = (-1,) + (1,) * (x.dim() - 1)
        if self.ranges["contrast"] != (1.0, 1.0):
            mean = x.mean(dim=tuple(range(1, x.dim())), keepdim=True)
            x = (x - mean) * p["contrast"].reshape(view) + mean
        if self.ranges["brightness"] != (0.0, 0.0):
            x = x + p["brightness"].reshape(view)
        if self.ranges["blur"][1] > 0:
            x = _blur(x, p["blur"], self.ranges["blur"][1])
        if self.noise > 0:
            x = x + self.noise * normal(generator, x)
        lo, hi = self.bounds
        x = x.clamp(lo, hi)
        if self.levels is not None:  # straight-through: rounded values forward, identity backward
            q = ((x - lo) / (hi - lo) * (self.levels - 1)).round() / (self.levels - 1) * (hi - lo) + lo
            x = x + (q - x).detach()
        return x


def _blur(x: Tensor, sigma: Tensor, max_sigma: float) -> Tensor:
    """Separable Gaussian blur with one sigma per sample (replicate padding)."""
    radius = max(1, math.ceil(3 * max_sigma))
    return separable_blur(x, gaussian_kernels(sigma, 2 * radius + 1, x.dtype), "replicate")


def make_transform(transform: Transform | Mapping[str, Any] | str) -> Transform:
    """A Transform from itself, a preset name ("physical", "none") or keyword arguments."""
    if isinstance(transform, Transform):
        return transform
    if isinstance(transform, Mapping) or (isinstance(transform, str) and transform in PRESETS):
        try:
            return Transform(**(PRESETS[transform] if isinstance(transform, str) else transform))
        except TypeError as exc:
            raise InputError(f"unknown Transform option: {exc}") from None
    raise InputError(f"expected a Transform, a preset ({', '.join(PRESETS)}) or a mapping, got {transform!r}")


class Expectation(nn.Module):
    """Mean log-softmax over `draws` fresh transformations (its CE: the expected CE, plus a term <= 0)."""

    def __init__(self, model: nn.Module, transform: Transform, draws: int, generator: Generators) -> None:
        super().__init__()
        self.model, self.transform, self.draws, self.generator = model, transform, draws, generator

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(self.generator, SampleGenerators) and len(self.generator) != x.shape[0]:
            raise InputError(f"expected the full batch of {len(self.generator)} samples, got {x.shape[0]}")
        outs = [self.model(self.transform(x, self.generator)).log_softmax(dim=1) for _ in range(self.draws)]
        return torch.stack(outs).mean(dim=0)


def eot(attack: str | Callable[..., Tensor], transform: Transform | Mapping[str, Any] | str = "physical", *,
        draws: int = 10) -> Callable[..., Tensor]:
    """Wrap an attack so its gradients are averages over `draws` random transformations.

    Athalye et al., arXiv:1707.07397. The wrapped attack needs the full batch in every forward
    pass when given SampleGenerators (no restarts, no early_stop).
        >>> robust_fgsm = eot("fgsm", "physical", draws=20)
        >>> x_adv = robust_fgsm(model, x, y, threat=ThreatModel(Norm.LINF, 0.3), generator=g)
    """
    fn = ATTACKS.get(attack) if isinstance(attack, str) else attack
    t, draws = make_transform(transform), check_positive_int("draws", draws)

    def wrapped(model: nn.Module, x: Tensor, y: Tensor, *, threat: ThreatModel, generator: Generators = None,
                **params: Any) -> Tensor:
        gen = generator if generator is not None else torch.Generator().manual_seed(int(torch.randint(2**62, (1,))))
        return fn(Expectation(model, t, draws, gen), x, y, threat=threat, generator=gen, **params)

    return wrapped


@ATTACKS.register("eot-pgd", kind="budget", norms=("linf", "l2", "l1"), needs_grad=True, targeted="optional",
                  paper="Athalye et al. 2018, arXiv:1707.07397", test_params={"steps": 3, "draws": 2},
                  renamed={"samples": "draws"})
def eot_pgd(model: nn.Module, x: Tensor, y: Tensor, *, threat: ThreatModel,
            transform: Transform | Mapping[str, Any] | str = "physical", draws: int = 10, steps: int = 40,
            step_size: float | None = None, random_start: bool = True, targeted: bool = False, loss: str = "ce",
            early_stop: bool = False, generator: Generators = None) -> Tensor:
    """PGD whose gradient at every step is the mean over `draws` random transformations.

    Athalye, Engstrom, Ilyas, Kwok, "Synthesizing robust adversarial examples", arXiv:1707.07397.
    transform: a Transform, a preset name ("physical": print-and-photo) or Transform kwargs;
    the other arguments are pgd's. A sample counts as fooled when the mean prediction is. Every
    step runs on every sample by default (early_stop=False): stopping as soon as the mean
    prediction flips leaves examples on the edge of the expectation, which then fool only about
    half of fresh transformations.
        >>> x_adv = eot_pgd(model, x, y, threat=ThreatModel(Norm.LINF, 0.3), draws=10, generator=g)
        >>> rate = evaluate_under_transforms(model, x_adv, y, Transform(**PRESETS["physical"]), generator=g)
    """
    return eot(pgd, transform, draws=draws)(model, x, y, threat=threat, steps=steps, step_size=step_size,
                                                random_start=random_start, targeted=targeted, loss=loss,
                                                early_stop=early_stop, generator=generator)


def evaluate_under_transforms(model: nn.Module, x_adv: Tensor, y: Tensor, transform: Transform, *, draws: int = 10,
                              targeted: bool = False, generator: Generators) -> float:
    """Success rate of x_adv under `draws` fresh random transformations each (mean over all).

    Success is a prediction != y (== y when targeted), as in Athalye et al., arXiv:1707.07397.
        >>> rate = evaluate_under_transforms(model, x_adv, y, Transform(rotation=15), draws=10, generator=g)
    """
    check_batch(x_adv, y, ThreatModel(Norm.LINF, math.inf, transform.bounds))
    draws, hits = check_positive_int("draws", draws), 0
    with torch.no_grad():
        for _ in range(draws):
            logits = model(transform(x_adv, generator))
            check_labels(y, logits.shape[1])
            hits += int(((logits.argmax(1) == y) if targeted else (logits.argmax(1) != y)).sum())
    return hits / (draws * x_adv.shape[0])


__all__ = ["PRESETS", "Expectation", "Transform", "eot", "eot_pgd", "evaluate_under_transforms", "make_transform"]
