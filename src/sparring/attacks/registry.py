"""ATTACKS: every attack a config or the CLI can name, with its metadata and one shared guard.

Metadata keys: kind ("budget" stays within eps; "minimal" finds the smallest perturbation and
one run gives the whole curve; "blackbox"; "transfer"), norms (tuple of norm names),
needs_grad, targeted ("optional", "never" or "required"), paper, test_params (small
hyperparameters that make the attack fast enough for the shared invariant suite in tests/), and:

- finite_eps (default: kind == "budget"): the attack needs a bounded ball. The registry's guard, not the
  attack, then refuses eps = inf in one line and answers eps = 0 with a copy of the checked input.
- batch_dependent (default False): the result for a sample depends on the other samples of the call (a
  universal perturbation, a substitute trained on the batch, one L-BFGS-B over the batch); the runner
  then attacks all samples in one call, so the result depends neither on batch size nor on processes.
- renamed: {old parameter: new one} kept as deprecated aliases (a DeprecationWarning, the value passed on).
- model_params: parameters that take models (transfer's surrogate); the experiment layer resolves names
  and paths to modules before the call, so attacks never load models.
"""

from __future__ import annotations

import functools
import inspect
import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError, InputError
from ..registry import Registry
from ..threat import ThreatModel
from .checks import check_batch, check_labels

__all__ = ["ATTACKS", "Attack", "check_params", "translate"]

Attack = Callable[..., Tensor]


Renamed = dict[str, "str | tuple[str, Callable[[Any], Any]]"]


def translate(name: str, params: dict[str, Any], renamed: Renamed) -> dict[str, Any]:
    """``params`` with deprecated names replaced by the new ones (a new name may come with a function of the
    old value, when the meaning shifted: DeepFool's candidates counted the label, target_classes does not)."""
    for old, new in renamed.items():
        if old in params:
            key, convert = (new, None) if isinstance(new, str) else new
            if key in params:
                raise InputError(f"{name}: expected {key} (the new name of {old}), got both")
            warnings.warn(f"{name}: parameter {old!r} is deprecated; use {key!r}", DeprecationWarning, stacklevel=3)
            value = params.pop(old)
            params[key] = value if convert is None else convert(value)
    return params


_KINDS: tuple[tuple[type, str], ...] = ((bool, "true or false"), (int, "an integer"), (float, "a finite number"),
                                       (str, "a string"))


def check_params(name: str, fn: Attack, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` checked against ``fn``'s keyword parameters annotated as plain bool, int, float or str
    with a default of that type (bool takes only true/false, int only an integer, float any finite number,
    str a string; wider annotations and None defaults are left to the attack); ints for a float become
    floats. Raises ConfigError naming the
    parameter, what it takes and what was given."""
    signature = inspect.signature(fn).parameters
    out = dict(params)
    for key, value in params.items():
        if key not in signature:
            continue
        default, annotation = signature[key].default, signature[key].annotation
        declared = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
        for kind, what in _KINDS:
            if isinstance(default, kind) and declared == kind.__name__:  # a wider annotation is not checked
                ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
                if kind is float:
                    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                    if ok:
                        out[key] = float(value)
                if not ok:
                    raise ConfigError(f"attack {name}: expected {key} to be {what}, got {value!r}")
                break
    return out


def _guard(name: str, fn: Attack, meta: dict[str, Any]) -> Attack:
    """The attack behind the checks every attack shares: deprecated names, then, for a finite-eps attack,
    eps = inf refused and eps = 0 answered with a copy of the (checked) input."""
    finite = bool(meta.get("finite_eps", meta.get("kind") == "budget"))
    renamed = dict(meta.get("renamed", {}))

    @functools.wraps(fn)
    def attack(model: nn.Module, x: Tensor, y: Tensor, **params: Any) -> Tensor:
        params = translate(name, params, renamed)
        threat = params.get("threat")
        if finite and isinstance(threat, ThreatModel):
            if not threat.bounded:
                raise InputError(f"{name} needs a finite eps, got eps=inf")
            if threat.eps == 0:
                check_batch(x, y, threat)
                with torch.no_grad():
                    check_labels(y, model(x.detach()[:1]).shape[1])
                return x.detach().clone()
        return fn(model, x, y, **params)

    return attack


ATTACKS: Registry[Attack] = Registry("attack", group="sparring.attacks", wrap=_guard)
