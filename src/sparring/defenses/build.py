"""Defense specs ("gaussian-blur:sigma=1.5" parsed to {"name", "params"}) checked and applied to a model.

`check_defense` validates a spec against DEFENSES (name, kind, parameters) and fills in the defaults;
`apply_defenses` puts the module defenses (preprocess filters, noise layers) on a model. `sparring
defend` and `load_model` both call it, so a saved defended model comes back with the same wrapper.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from ..errors import ConfigError
from .bpda import Defended
from .noise import insert_noise
from .registry import DEFENSES

__all__ = ["FILTERS", "apply_defenses", "check_defense"]

#: preprocess defenses the CLI can build from their parameters alone (modules with surrogate()).
FILTERS = ("bit-depth", "gaussian-blur", "jpeg", "median-blur")
_AT = ("fgsm-at", "fgsm-rs-at", "pgd-at", "trades", "ensemble-at")


def _accepted(name: str, meta: Mapping[str, Any]) -> tuple[str, ...]:
    kind = meta.get("kind")
    if kind == "preprocess" and name in FILTERS:
        return tuple(inspect.signature(DEFENSES.get(name)).parameters)
    if kind == "noise":
        return ("sigma", "where")
    if name in _AT:
        method = meta.get("method")
        extra = {"fgsm": ("eps_warmup",), "ensemble": ("eps_warmup", "surrogates")}.get(method, ("step_size", "eps_warmup"))
        return tuple(sorted({*meta["params"], *extra} - {"schedule"}))
    if name == "distillation":
        return ("temperature", "student_epochs")
    return ()


def check_defense(name: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """{"name", "kind", "params"} for a defense the CLI can apply; params completed with the defaults.

    Raises UnknownNameError (with "did you mean") for an unknown name, ConfigError for a kind the CLI
    does not apply (detectors, certification, defenses needing other trained models) or an unknown parameter.
        >>> check_defense("gaussian-blur", {"sigma": 1.0})["params"]
        {'sigma': 1.0}
    """
    meta = DEFENSES.meta(name)  # raises UnknownNameError with a hint
    kind, params = meta.get("kind"), dict(params or {})
    if kind in ("detector", "certified"):
        raise ConfigError(f"defense {name!r} is a {kind} defense; those are evaluated from Python for now "
                          "(sparring.defenses), not by `sparring defend`")
    if name == "ensemble-at" and not str(params.get("surrogates") or "").strip("+"):
        raise ConfigError("defense 'ensemble-at' needs surrogates=MODEL+MODEL...: pretrained aliases or saved "
                          "models (e.g. ensemble-at:surrogates=lenet5-advertorch-clean+models/mnist-b)")
    accepted = _accepted(name, meta)
    if not accepted:
        raise ConfigError(f"defense {name!r} needs more than parameters (a trained module or a layer name); "
                          "run it from Python for now (sparring.defenses)")
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(f"defense {name!r} does not take {', '.join(unknown)} (accepted: {', '.join(accepted)})")
    defaults = {k: v for k, v in meta.get("params", {}).items() if k in accepted}
    if kind == "noise":
        defaults["where"] = "noise1"
    return {"name": name, "kind": kind, "params": {**defaults, **params}}


def apply_defenses(model: nn.Module, specs: Sequence[Mapping[str, Any]]) -> nn.Module:
    """The model with the module defenses of `specs` applied; training entries are skipped (already trained).

    Noise layers go into the model's noise slots in place (insert_noise; no new weights); preprocess
    filters, in the order given, go in front: Defended(filter or nn.Sequential(filters), model), so the
    network's state_dict keys stay under `.model`. specs: dicts {"name", "params"} as saved in the meta.
        >>> defended = apply_defenses(net, [{"name": "gaussian-blur", "params": {"sigma": 1.5}}])
        >>> type(defended.preprocess).__name__
        'GaussianBlur'
    """
    filters: list[nn.Module] = []
    for spec in specs:
        if not isinstance(spec, Mapping) or "name" not in spec:
            raise ConfigError(f"expected a defense spec {{'name': ..., 'params': {{...}}}}, got {spec!r}")
        checked = check_defense(str(spec["name"]), spec.get("params") or {})
        params = checked["params"]
        if checked["kind"] == "noise":
            where = params["where"]
            slots = tuple(where.split("+")) if isinstance(where, str) else tuple(where)
            insert_noise(model, params["sigma"], where=slots)
        elif checked["kind"] == "preprocess":
            filters.append(DEFENSES.get(checked["name"])(**params))
    if not filters:
        return model
    return Defended(filters[0] if len(filters) == 1 else nn.Sequential(*filters), model)
