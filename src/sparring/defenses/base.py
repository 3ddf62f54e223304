"""The defense contract: one DefenseSpec per registered defense, and the flags the audit reads.

A DefenseSpec says what a defense is (kind, the paper, whether it is differentiable or random), which
parameters it takes (typed, with defaults), and how each stage of a defense chain uses it, through the
capabilities it has (any subset):

- ``front(entry, parts) -> module``: a module put in front of the network (input filters, the reformer);
- ``inside(network, entry)``: a change of the network in place (noise layers in its slots);
- ``fit(context, params) -> Fitted``: parts trained on the data alone, before the model (an autoencoder);
- ``train(model, context, params) -> Trained``: the training recipe of the model (at most one per chain);
- ``around(model, entry, parts) -> module``: a wrapper around the deployed model (the latent 1-NN);
- ``detector(model, context, params) -> Detector``: a detector of adversarial inputs (``sparring detect``).

Building a chain (build.py), training it (sparring.experiment), the CLI, configs, ``sparring list
defenses`` and the tests all read the spec, so a new defense is one file that registers one:

    register(DefenseSpec("my-filter", kind="preprocess", differentiable=True, random=False, paper="...",
                         description="...", params=(Param("strength", float, 1.0),),
                         front=lambda entry, parts: MyFilter(**entry["params"])))

A plugin package registers its file through the "sparring.defenses" entry point (sparring.registry).
A module that is not differentiable says so (``differentiable = False``) and gives ``surrogate()``; a
random one says ``random = True``; the flags below combine them over a model's modules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ..config import TrainSettings
from ..data import Dataset
from ..errors import ConfigError, InputError
from ..registry import Registry
from ..threat import ThreatModel

__all__ = ["DEFENSES", "KINDS", "Context", "DefenseSpec", "Fitted", "Param", "Trained", "is_differentiable",
           "is_random", "register"]

KINDS = ("preprocess", "noise", "training", "detector", "certified")
_TYPES: dict[str, type | tuple[type, ...]] = {"int": int, "float": (int, float), "str": str, "bool": bool,
                                               "models": str}


# ---------------------------------------------------------------- the flags


def _flag(module: nn.Module, name: str, default: bool) -> bool:
    """A module's declared flag, or else the combination over its children (all / any)."""
    flag = getattr(module, name, None)
    if isinstance(flag, bool):
        return flag
    children = [_flag(c, name, default) for c in module.children()]
    return all(children) if default else any(children)


def is_differentiable(module: nn.Module) -> bool:
    """False when the module, or a child that does not declare the flag itself, says differentiable = False.

    Modules without the flag (Normalize, a network) count as differentiable.
        >>> is_differentiable(nn.Sequential(JPEG(75), net))
        False
    """
    return _flag(module, "differentiable", True)


def is_random(module: nn.Module) -> bool:
    """True when the module, or a child that does not declare the flag itself, says random = True.

        >>> is_random(nn.Sequential(MedianBlur(3), net))
        False
    """
    return _flag(module, "random", False)


# ---------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Param:
    """A parameter a defense takes from the CLI (``NAME:key=value``) or a config table.

    kind: "int", "float" (an int is taken as a float), "str", "bool", or "models": model names and paths
    joined by "+" (ensemble-at's surrogates), resolved to trained modules above the defenses
    (sparring.experiment) before ``train`` runs. default None: optional, left out unless given (or, with
    required, refused when missing).
    """

    name: str
    kind: str
    default: Any = None
    help: str = ""
    required: bool = False

    def __post_init__(self) -> None:
        if self.kind not in _TYPES:
            raise ValueError(f"parameter kind must be one of {', '.join(_TYPES)}, got {self.kind!r}")

    def check(self, value: Any, defense: str) -> Any:
        want = _TYPES[self.kind]
        ok = isinstance(value, want) and (self.kind == "bool" or not isinstance(value, bool))
        if self.kind == "float" and ok:
            ok = math.isfinite(value)
            value = float(value)
        if self.kind == "models" and ok and not value.strip("+"):
            ok = False
        if not ok:
            what = {"models": "model names or paths joined by '+'", "float": "a finite number",
                    "int": "an integer", "str": "a string", "bool": "true or false"}[self.kind]
            raise ConfigError(f"defense {defense!r}: expected {self.name} to be {what}, got {value!r}")
        return value


# ---------------------------------------------------------------- what training a defense gets and gives


@dataclass(frozen=True)
class Context:
    """What a defense's ``fit``, ``train`` or ``detector`` may use.

    dataset: the data (its training split for training; x_test as the validation split); settings: the
    training knobs; threat: the budget of an adversarial-training recipe (eps given, else None);
    checkpoint / resume: the training-state stem and whether to resume (sparring.training.train);
    attack / attack_params: the attack a detector is trained or measured against.
    """

    dataset: Dataset
    settings: TrainSettings = field(default_factory=TrainSettings)
    seed: int = 0
    device: str = "cpu"
    threat: ThreatModel | None = None
    checkpoint: Path | None = None
    resume: bool = False
    progress: bool = False
    attack: str = "pgd"
    attack_params: Mapping[str, Any] = field(default_factory=dict)

    def training_data(self, defense: str, *, augment: bool = True, first: int | None = None) -> tuple[Tensor, Tensor]:
        """The dataset's training split (images, labels), or a ConfigError naming ``defense`` when the dataset
        has none; augment=False: the defense trains without augmentation, and refuses settings that ask for it;
        first: only the first images (at least 2), a detector's ``train`` parameter.
            >>> x_train, y_train = context.training_data("distillation", augment=False)
        """
        ds = self.dataset
        if ds.x_train is None or ds.y_train is None:
            raise ConfigError(f"defense {defense!r} trains on the training split, which dataset {ds.name!r} "
                              "lacks here")
        if not augment and self.settings.augment != "none":
            raise ConfigError(f"defense {defense!r} trains without augmentation: expected augment='none', got "
                              f"{self.settings.augment!r}")
        if first is None:
            return ds.x_train, ds.y_train
        if first < 2:
            raise ConfigError(f"defense {defense!r}: expected train to be >= 2 training images, got {first}")
        return ds.x_train[:first], ds.y_train[:first]


@dataclass(frozen=True)
class Trained:
    """A recipe's result: the model to deploy and the training history."""

    model: nn.Module
    history: Any


@dataclass(frozen=True)
class Fitted:
    """A ``fit``'s result: trained parts (flat tensors, saved beside the weights), the history, and facts
    the chain entry records for ``front`` to rebuild the module (e.g. the image shape)."""

    parts: dict[str, Tensor]
    history: Any
    entry: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- the spec and the registry


@dataclass(frozen=True)
class DefenseSpec:
    """One registered defense (see the module docstring for the capabilities).

    target: what the defense is for a library user (its class or function, e.g. GaussianBlur, distill);
    needs_eps: it trains against an attack budget (adversarial training); data_parallel: its training runs
    in DistributedDataParallel under torchrun (else rank 0 trains alone while the others wait); meta: more
    metadata for ``DEFENSES.meta`` (an adversarial-training recipe's method).
    """

    name: str
    kind: str
    differentiable: bool
    random: bool
    paper: str
    description: str
    target: Any = None
    params: tuple[Param, ...] = ()
    needs_eps: bool = False
    data_parallel: bool = False
    front: Callable[[Mapping[str, Any], Mapping[str, Tensor]], nn.Module] | None = None
    inside: Callable[[nn.Module, Mapping[str, Any]], None] | None = None
    fit: Callable[[Context, dict[str, Any]], Fitted] | None = None
    train: Callable[[nn.Module, Context, dict[str, Any]], Trained] | None = None
    around: Callable[[nn.Module, Mapping[str, Any], Mapping[str, Tensor]], nn.Module] | None = None
    detector: Callable[[nn.Module, Context, dict[str, Any]], nn.Module] | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"defense {self.name!r}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not any((self.front, self.inside, self.fit, self.train, self.around, self.detector)):
            raise ValueError(f"defense {self.name!r} has no capability (front, inside, fit, train, around, detector)")

    @property
    def deployed(self) -> bool:
        """Whether it becomes part of the deployed model (rather than being trained, or measured)."""
        return any((self.front, self.inside, self.around))

    def defaults(self) -> dict[str, Any]:
        """The parameters with a default, as a dict (optional ones without default left out)."""
        return {p.name: p.default for p in self.params if p.default is not None}

    def check(self, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """``params`` checked against the declared ones (typed; unknown names refused) and completed with the
        defaults; ConfigError in one line."""
        params = dict(params or {})
        known = {p.name: p for p in self.params}
        unknown = sorted(set(params) - set(known))
        if unknown:
            accepted = ", ".join(known) or "none"
            raise ConfigError(f"defense {self.name!r} does not take {', '.join(unknown)} (accepted: {accepted})")
        missing = [p for p in self.params if p.required and p.name not in params]
        if missing:
            raise ConfigError(f"defense {self.name!r} needs {missing[0].name}=: {missing[0].help}")
        return {**self.defaults(), **{k: known[k].check(v, self.name) for k, v in params.items()}}

    def summary(self) -> dict[str, Any]:
        """The registry metadata: kind, flags, paper, description, params (the defaults) and ``meta``."""
        return {"kind": self.kind, "differentiable": self.differentiable, "random": self.random,
                "paper": self.paper, "description": self.description, "params": self.defaults(),
                "needs_eps": self.needs_eps, "data_parallel": self.data_parallel, **self.meta}


DEFENSES: Registry[DefenseSpec] = Registry("defense", group="sparring.defenses")


def register(spec: DefenseSpec) -> DefenseSpec:
    """Register a DefenseSpec under its name (ValueError when the name is taken)."""
    if not isinstance(spec, DefenseSpec):
        raise InputError(f"expected a DefenseSpec, got {type(spec).__name__}")
    return DEFENSES.register(spec.name, **spec.summary())(spec)
