"""Gaussian noise layers: a random defense active at training *and* test time.

Lecuyer et al. 2019, "Certified Robustness to Adversarial Examples with Differential Privacy"
(PixelDP), arXiv:1802.03471, put a noise layer early in the network (after the first
convolution) and keep it at test time; the seed report also tried one between the dense layers.
The layer declares ``random = True``: an honest attack averages its gradients over the noise
(EOT), and the audit reads the flag. It is differentiable (the noise is additive), so no BPDA.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from ..errors import ConfigError, InputError
from ..rng import Generators, normal
from .base import DefenseSpec, Param, register

__all__ = ["GaussianNoise", "insert_noise"]

_PIXELDP = (
    "Lecuyer, Atlidakis, Geambasu, Hsu, Jana 2019, Certified Robustness to Adversarial Examples "
    "with Differential Privacy (PixelDP), arXiv:1802.03471"
)


def _check_sigma(sigma: object) -> float:
    ok = isinstance(sigma, (int, float)) and not isinstance(sigma, bool) and math.isfinite(sigma)
    if not ok or sigma < 0:  # type: ignore[operator]
        raise InputError(f"expected noise sigma to be a finite number >= 0, got {sigma!r}")
    return float(sigma)  # type: ignore[arg-type]


class GaussianNoise(nn.Module):
    """Add N(0, sigma^2) noise to its input in train and eval mode (PixelDP, arXiv:1802.03471).

    Args:
        sigma: standard deviation of the noise (>= 0), in the units of the layer's input
            (activations when the layer sits inside the network). sigma = 0 is the identity.
        generator: where the noise comes from. None (default): torch's global RNG, so every
            forward pass sees fresh noise (what EOT averages over). A torch.Generator makes
            forward passes reproducible; a SampleGenerators gives one stream per sample (the
            batch must then have exactly one row per generator). Settable as ``.generator``.

    Flags read by the audit and the adaptive attacks: ``differentiable = True``,
    ``random = True``.

    Example:
        >>> layer = GaussianNoise(0.1).eval()
        >>> out = layer(torch.zeros(2, 3))  # fresh N(0, 0.01) noise, even in eval mode
    """

    differentiable = True
    random = True

    def __init__(self, sigma: float = 0.05, *, generator: Generators = None) -> None:
        super().__init__()
        self.sigma = _check_sigma(sigma)
        self.generator = generator

    def forward(self, x: Tensor) -> Tensor:
        """x + sigma * N(0, 1) noise shaped like x (x itself when sigma = 0)."""
        if self.sigma == 0:
            return x
        return x + self.sigma * normal(self.generator, x)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"


def _slots(model: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    """Noise slots: modules named noise* that are nn.Identity or GaussianNoise, by dotted path."""
    found: dict[str, tuple[nn.Module, str]] = {}
    for path, parent in model.named_modules():
        for child_name, child in parent.named_children():
            if child_name.startswith("noise") and isinstance(child, (nn.Identity, GaussianNoise)):
                found[f"{path}.{child_name}" if path else child_name] = (parent, child_name)
    return found


def insert_noise(
    model: nn.Module, sigma: float, where: str | Sequence[str] = ("noise1",), *, generator: Generators = None
) -> nn.Module:
    """Put a GaussianNoise(sigma) layer into named noise slots of a model, in place.

    A slot is a submodule named like ``noise1`` / ``noise2`` that is an ``nn.Identity`` (or an
    earlier GaussianNoise, which is replaced), found anywhere in the module tree, e.g.
    ``model.net.noise1`` in a ``Normalized`` cifar-cnn (Lecuyer et al. 2019, arXiv:1802.03471).

    Args:
        model: the network; modified in place and returned.
        sigma: noise standard deviation (>= 0).
        where: slot name(s) to fill: a bare name ("noise1", every slot of that name) or a
            dotted path ("net.noise2").
        generator: passed to every inserted layer (default None: torch's global RNG).
    Raises:
        ConfigError: a requested slot does not exist (the message lists the available ones).
        InputError: sigma is not a finite number >= 0.

    Example:
        >>> model = insert_noise(build_model("cifar-cnn"), 0.1, where=("noise1", "noise2"))
        >>> type(model.net.noise1).__name__
        'GaussianNoise'
    """
    sigma = _check_sigma(sigma)
    names = (where,) if isinstance(where, str) else tuple(where)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"expected one or more noise slot names such as 'noise1', got {where!r}")
    slots = _slots(model)
    targets: list[tuple[nn.Module, str]] = []
    for name in names:
        hits = [slot for path, slot in slots.items() if path == name or path.rsplit(".", 1)[-1] == name]
        if not hits:
            available = ", ".join(sorted(slots)) or "none"
            raise ConfigError(f"expected a noise slot named {name!r} in the model, got slots: {available}")
        targets.extend(hits)
    for parent, child_name in targets:
        setattr(parent, child_name, GaussianNoise(sigma, generator=generator))
    return model


def _noise_inside(net: nn.Module, entry: Mapping[str, Any]) -> None:
    """The spec's ``inside``: noise layers into the slots ``where`` names ("noise1+noise2")."""
    params = entry["params"]
    where = params["where"]
    insert_noise(net, params["sigma"], where=tuple(where.split("+")) if isinstance(where, str) else tuple(where))


register(DefenseSpec(
    "gaussian-noise", kind="noise", differentiable=True, random=True, paper=_PIXELDP, target=GaussianNoise,
    description="Gaussian noise layer, active at test time, in the model's noise1/noise2 slots",
    params=(Param("sigma", "float", 0.05, "noise standard deviation"),
            Param("where", "str", "noise1", "slot names joined by '+', e.g. noise1+noise2")),
    inside=_noise_inside))
