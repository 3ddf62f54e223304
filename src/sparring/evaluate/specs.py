"""What to evaluate: an attack with its norm, hyperparameters, targets and epsilon list."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from ..attacks import ATTACKS
from ..attacks.registry import check_params, translate
from ..errors import ConfigError, InputError
from ..paths import check_name
from ..rng import SampleGenerators, derive, integers
from ..threat import Norm

TARGET_MODES = ("random", "least-likely", "next")


@dataclass(frozen=True)
class AttackSpec:
    """One attack to run: registered name, norm, keyword hyperparameters, epsilons.

    eps holds (label, value) pairs such as ("8/255", 0.0313...). For a "minimal" attack the
    epsilons are thresholds on the one unbounded run. target picks the classes of a targeted
    attack: "random" (seeded per sample, never the label), "least-likely" or "next" ((y+1) mod K).
    params may use an attack's deprecated parameter names (they are translated, with a warning). models
    holds the modules of the attack's model parameters (transfer's surrogate), resolved from the names in
    params by sparring.experiment; the call gets the modules, the records the names.
    """

    name: str
    norm: Norm
    eps: tuple[tuple[str, float], ...]
    params: dict[str, Any] = field(default_factory=dict)
    targeted: bool = False
    target: str = "random"
    label: str = ""
    models: Mapping[str, nn.Module | list[nn.Module]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        meta = ATTACKS.meta(self.name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            object.__setattr__(self, "params", translate(self.name, dict(self.params), meta.get("renamed", {})))
        object.__setattr__(self, "norm", Norm.parse(self.norm))
        object.__setattr__(self, "label", self.label or self.name)
        if self.norm.value not in meta["norms"]:
            raise ConfigError(f"attack {self.name} supports norms {', '.join(meta['norms'])}, got {self.norm.value}")
        if self.targeted and meta["targeted"] == "never":
            raise ConfigError(f"attack {self.name} is untargeted by design, got targeted=true")
        if self.target not in TARGET_MODES:
            raise ConfigError(f"target must be one of {', '.join(TARGET_MODES)}, got {self.target!r}")
        accepted = set(inspect.signature(ATTACKS.get(self.name)).parameters)
        accepted -= {"model", "x", "y", "threat", "generator", "targeted"}
        unknown = sorted(set(self.params) - accepted)
        if unknown:
            raise ConfigError(f"attack {self.name} has no parameter {unknown[0]!r} "
                              f"(accepted: {', '.join(sorted(accepted))})")
        object.__setattr__(self, "params", check_params(self.name, ATTACKS.get(self.name), self.params))
        check_name(self.label, f"attack {self.name}'s label")
        if not self.eps:
            raise ConfigError(f"attack {self.label} needs at least one eps")

    @property
    def kind(self) -> str:
        return str(ATTACKS.meta(self.name)["kind"])

    @property
    def batch_dependent(self) -> bool:
        """Whether a sample's result depends on the other samples of the call (ATTACKS metadata)."""
        return bool(ATTACKS.meta(self.name).get("batch_dependent", False))

    @property
    def model_params(self) -> tuple[str, ...]:
        """The attack's parameters that take models (resolved above, into ``models``)."""
        return tuple(ATTACKS.meta(self.name).get("model_params", ()))

    def call_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the attack call: the params with the resolved models in place of their names,
        and `targeted` whenever the attack takes it (so an attack whose default is targeted is never run
        targeted by accident)."""
        kwargs = {**self.params, **self.models}
        if "targeted" in inspect.signature(ATTACKS.get(self.name)).parameters:
            kwargs["targeted"] = self.targeted
        return kwargs

    def resolved_params(self) -> dict[str, Any]:
        """The hyperparameters with the attack's defaults filled in (for the record)."""
        sig = inspect.signature(ATTACKS.get(self.name))
        out = {k: p.default for k, p in sig.parameters.items()
               if p.kind is p.KEYWORD_ONLY and k not in ("threat", "generator") and p.default is not p.empty}
        out.update(self.params)
        if "targeted" in sig.parameters:
            out["targeted"] = self.targeted
        return out


def choose_targets(logits: Tensor, y: Tensor, mode: str, seed: int, indices: Tensor) -> Tensor:
    """Target classes that are never the true label, chosen per sample (seeded by index)."""
    k = logits.shape[1]
    if k < 2:
        raise InputError(f"targeted attacks need at least 2 classes, got {k}")
    if mode == "least-likely":
        return logits.scatter(1, y[:, None], float("inf")).argmin(dim=1)
    if mode == "next":
        return (y + 1) % k
    shift = integers(SampleGenerators(derive(seed, "targets"), indices), 1, k, len(y), y.device)
    return (y + shift) % k
