"""Defense chains: entries ({"name", "params"}) checked against their specs, deployed on a network, taken
back apart for saving, and loaded from a saved model.

`check_defense` validates an entry against its DefenseSpec (typed parameters, defaults filled in);
`apply_defenses` puts the deployed defenses on a network, in the order given: each spec's ``inside`` changes
the network in place (noise layers), its ``front`` modules go in front as one ``Defended`` (filters, the
reformer), its ``around`` wraps the result (the latent 1-NN). `sparring defend`, `sparring run` and
`load_defended` all go through it, so a saved defended model comes back with the same wrapper. Trained parts
travel as `parts`, a flat dict of tensors ("autoencoder.<key>", "contrastive.ref_images") that the deployed
modules hand back with ``trained_parts()``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ..errors import ConfigError
from ..models import load_network
from .base import DEFENSES, DefenseSpec
from .bpda import Defended

__all__ = ["apply_defenses", "check_defense", "load_defended", "network_and_parts"]


def check_defense(name: str, params: Mapping[str, Any] | None = None) -> tuple[DefenseSpec, dict[str, Any]]:
    """(the spec, its checked parameters with the defaults) for a defense a chain can hold.

    Raises UnknownNameError (with "did you mean") for an unknown name, ConfigError for a detector (measured
    by `sparring detect`, not deployed in front of a model), an unknown or ill-typed parameter, or a missing
    required one.
        >>> check_defense("gaussian-blur", {"sigma": 1.0})[1]
        {'sigma': 1.0}
    """
    spec = DEFENSES.get(name)  # raises UnknownNameError with a hint
    if spec.detector is not None and not spec.deployed and spec.train is None:
        raise ConfigError(f"defense {name!r} is a detector: train and measure it with `sparring detect --detector "
                          f"{name} --model ...` (or sparring.defenses from Python)")
    return spec, spec.check(params)


def apply_defenses(model: nn.Module, chain: Sequence[Mapping[str, Any]],
                   parts: Mapping[str, Tensor] | None = None) -> nn.Module:
    """The model with the deployed defenses of ``chain`` applied; training recipes are skipped (already trained).

    Noise layers go into the model's noise slots in place (no new weights); ``front`` modules (filters, the
    reformer), in the order given, go in front: Defended(module or nn.Sequential(modules), model), so the
    network's state_dict keys stay under `.model`; ``around`` wrappers (the contrastive 1-NN, given its
    reference images in ``parts``) wrap the result. chain: dicts {"name", "params", ...} as saved in a model's
    meta; parts: trained tensors (network_and_parts).
        >>> defended = apply_defenses(net, [{"name": "gaussian-blur", "params": {"sigma": 1.5}}])
        >>> type(defended.preprocess).__name__
        'GaussianBlur'
    """
    parts = dict(parts or {})
    front: list[nn.Module] = []
    around: list[tuple[DefenseSpec, dict[str, Any]]] = []
    for entry in chain:
        if not isinstance(entry, Mapping) or "name" not in entry:
            raise ConfigError(f"expected a defense entry {{'name': ..., 'params': {{...}}}}, got {entry!r}")
        spec, params = check_defense(str(entry["name"]), entry.get("params") or {})
        checked = {**entry, "params": params}
        if spec.inside is not None:
            spec.inside(model, checked)
        if spec.front is not None:
            front.append(spec.front(checked, parts))
        if spec.around is not None:
            around.append((spec, checked))
    if front:
        model = Defended(front[0] if len(front) == 1 else nn.Sequential(*front), model)
    for spec, checked in around:
        assert spec.around is not None
        model = spec.around(model, checked, parts)
    return model


def network_and_parts(model: nn.Module) -> tuple[nn.Module, dict[str, Tensor]]:
    """(the network inside apply_defenses' wrappers, its trained parts as a flat dict of CPU tensors).

    The inverse of apply_defenses for saving: every wrapper with ``unwrap()`` is taken off, what its
    ``trained_parts()`` holds collected (a LatentNN's reference images, a reformer's autoencoder); noise
    layers stay in the network (no weights).
        >>> net, parts = network_and_parts(apply_defenses(net, chain, parts))
    """
    parts: dict[str, Tensor] = {}
    while callable(unwrap := getattr(model, "unwrap", None)):
        held = getattr(model, "trained_parts", None)
        if callable(held):
            parts.update(held())
        model = unwrap()
    return model, parts


def load_defended(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """A model saved by sparring, with the defenses it was saved with put back on (sparring.load_model).

    ``path`` is the .safetensors, the .json or the stem. Returns (model in eval mode, the JSON sidecar as a
    dict, including the saved meta). A sidecar with a "defense" list (from ``sparring defend``) gives the
    network with those defenses applied, e.g. ``Defended(GaussianBlur(1.5), net)``.
    Raises DataError for missing or corrupt files, or weights that do not match the sidecar's sha256.
        >>> model, info = load_defended("models/digits-pgd")  # doctest: +SKIP
    """
    network, info, parts = load_network(path)
    if not info.get("defense"):
        return network, info
    return apply_defenses(network, info["defense"], parts).eval(), info
