"""Defense specs ("gaussian-blur:sigma=1.5" parsed to {"name", "params"}) checked and applied to a model.

`check_defense` validates a spec against DEFENSES (name, kind, parameters) and fills in the defaults;
`apply_defenses` puts the deployed defenses on a network: noise layers, input filters, the MagNet
reformer (its trained autoencoder) and the contrastive 1-NN classifier (its reference images).
`sparring defend`, `sparring run` and `load_model` all go through it, so a saved defended model comes
back with the same wrapper. Trained parts travel as `parts`, a flat dict of tensors
("autoencoder.<key>", "contrastive.ref_images") that `network_and_parts` takes back out.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError, DataError
from .bpda import Defended
from .contrastive import PENULTIMATE, LatentNN
from .noise import insert_noise
from .reconstruction import Reformer, build_autoencoder
from .registry import DEFENSES

__all__ = ["FILTERS", "RECIPES", "apply_defenses", "autoencoder_parts", "check_defense", "network_and_parts"]

#: preprocess defenses the CLI can build from their parameters alone (modules with surrogate()).
FILTERS = ("bit-depth", "gaussian-blur", "jpeg", "median-blur")
_AT = ("fgsm-at", "fgsm-rs-at", "pgd-at", "trades", "ensemble-at")
#: defenses trained by their own recipe (no eps), with the parameters the CLI accepts and their defaults.
RECIPES: dict[str, dict[str, Any]] = {
    "distillation": {"temperature": 20.0, "student_epochs": None},
    "contrastive": {"layer": PENULTIMATE, "margin": 2.0, "weight": 1.0, "pairs": "batch", "per_class": 5},
    "autoencoder": {"noise": 0.1, "width": 16, "epochs": 20, "lr": 1e-3},
    "randomized-smoothing": {"sigma": 0.25},
}


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
    return tuple(RECIPES.get(name, ()))


def check_defense(name: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """{"name", "kind", "params"} for a defense the CLI can apply; params completed with the defaults.

    Raises UnknownNameError (with "did you mean") for an unknown name, ConfigError for a kind the CLI
    does not apply (detectors, certification, defenses needing other trained models) or an unknown parameter.
        >>> check_defense("gaussian-blur", {"sigma": 1.0})["params"]
        {'sigma': 1.0}
    """
    meta = DEFENSES.meta(name)  # raises UnknownNameError with a hint
    kind, params = meta.get("kind"), dict(params or {})
    if kind == "detector":
        raise ConfigError(f"defense {name!r} is a detector: train and measure it with `sparring detect --detector "
                          f"{name} --model ...` (or sparring.defenses from Python)")
    if name == "ensemble-at" and not str(params.get("surrogates") or "").strip("+"):
        raise ConfigError("defense 'ensemble-at' needs surrogates=MODEL+MODEL...: pretrained aliases or saved "
                          "models (e.g. ensemble-at:surrogates=lenet5-advertorch-clean+models/mnist-b)")
    accepted = _accepted(name, meta)
    if not accepted:
        raise ConfigError(f"defense {name!r} needs more than parameters; run it from Python (sparring.defenses)")
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(f"defense {name!r} does not take {', '.join(unknown)} (accepted: {', '.join(accepted)})")
    if name in RECIPES:
        defaults = {k: v for k, v in RECIPES[name].items() if v is not None}
        kind = "training" if name in ("contrastive", "randomized-smoothing") else kind
    else:
        defaults = {k: v for k, v in meta.get("params", {}).items() if k in accepted}
    if kind == "noise":
        defaults["where"] = "noise1"
    return {"name": name, "kind": kind, "params": {**defaults, **params}}


def _network_prefix(model: nn.Module) -> str:
    from ..models import Normalized

    return next((name for name, m in model.named_modules() if isinstance(m, Normalized)), "")


def _latent_layer(model: nn.Module, layer: str) -> str:
    """A layer named on the network (as in build_model(...).named_modules()) named on the wrapper."""
    prefix = _network_prefix(model)
    return layer if layer == PENULTIMATE or not prefix else f"{prefix}.{layer}"


def _part(parts: Mapping[str, Tensor], prefix: str, name: str) -> dict[str, Tensor]:
    found = {k[len(prefix):]: v for k, v in parts.items() if k.startswith(prefix)}
    if not found:
        raise DataError(f"defense {name!r} needs its trained part ({prefix}*), which the saved model lacks; "
                        "it is written by `sparring defend` next to the weights (<stem>.parts.safetensors)")
    return found


def _autoencoder(spec: Mapping[str, Any], params: Mapping[str, Any], parts: Mapping[str, Tensor]) -> nn.Module:
    state = _part(parts, "autoencoder.", "autoencoder")
    shape = spec.get("shape")
    if not isinstance(shape, (list, tuple)) or len(shape) != 3:
        raise DataError(f"defense 'autoencoder' needs the image shape (C, H, W) in its spec, got {shape!r}")
    ae = build_autoencoder(tuple(int(v) for v in shape), width=int(params["width"]))  # type: ignore[arg-type]
    try:
        ae.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise DataError(f"the saved autoencoder does not fit width {params['width']} and shape {shape} "
                        f"({str(exc).splitlines()[0]})") from None
    return Reformer(ae.eval())


def apply_defenses(model: nn.Module, specs: Sequence[Mapping[str, Any]],
                   parts: Mapping[str, Tensor] | None = None) -> nn.Module:
    """The model with the deployed defenses of `specs` applied; training recipes are skipped (already trained).

    Noise layers go into the model's noise slots in place (insert_noise; no new weights); preprocess
    filters and the autoencoder's Reformer, in the order given, go in front: Defended(filter or
    nn.Sequential(filters), model), so the network's state_dict keys stay under `.model`. A contrastive
    entry whose reference images are in `parts` wraps the result in LatentNN (1-NN in its layer).
    specs: dicts {"name", "params"} as saved in the meta; parts: trained tensors (network_and_parts).
        >>> defended = apply_defenses(net, [{"name": "gaussian-blur", "params": {"sigma": 1.5}}])
        >>> type(defended.preprocess).__name__
        'GaussianBlur'
    """
    parts = dict(parts or {})
    filters: list[nn.Module] = []
    latent: dict[str, Any] | None = None
    for spec in specs:
        if not isinstance(spec, Mapping) or "name" not in spec:
            raise ConfigError(f"expected a defense spec {{'name': ..., 'params': {{...}}}}, got {spec!r}")
        checked = check_defense(str(spec["name"]), spec.get("params") or {})
        params = checked["params"]
        if checked["kind"] == "noise":
            where = params["where"]
            slots = tuple(where.split("+")) if isinstance(where, str) else tuple(where)
            insert_noise(model, params["sigma"], where=slots)
        elif checked["name"] == "autoencoder":
            filters.append(_autoencoder(spec, params, parts))
        elif checked["kind"] == "preprocess":
            filters.append(DEFENSES.get(checked["name"])(**params))
        elif checked["name"] == "contrastive" and "contrastive.ref_images" in parts:
            latent = params
    if filters:
        model = Defended(filters[0] if len(filters) == 1 else nn.Sequential(*filters), model)
    if latent is not None:
        refs = parts["contrastive.ref_images"]
        per_class = int(latent["per_class"])
        if len(refs) % per_class:
            raise DataError(f"expected the saved reference images to be {per_class} per class, got {len(refs)} images")
        labels = torch.arange(len(refs) // per_class).repeat_interleave(per_class)
        device = next(model.parameters(), refs).device
        model = LatentNN(model, _latent_layer(model, str(latent["layer"])), refs.to(device), labels.to(device),
                         per_class=per_class)
    return model


def autoencoder_parts(autoencoder: nn.Module) -> dict[str, Tensor]:
    """The trained autoencoder as parts: "autoencoder.<state_dict key>" -> CPU tensor (read by apply_defenses)."""
    return {f"autoencoder.{k}": v.detach().cpu() for k, v in autoencoder.state_dict().items()}


def network_and_parts(model: nn.Module) -> tuple[nn.Module, dict[str, Tensor]]:
    """(the network inside apply_defenses' wrappers, its trained parts as a flat dict of CPU tensors).

    The inverse of apply_defenses for saving: LatentNN gives "contrastive.ref_images", a Reformer in
    front gives "autoencoder.<state_dict key>"; noise layers stay in the network (no weights).
        >>> net, parts = network_and_parts(apply_defenses(net, chain, parts))
    """
    parts: dict[str, Tensor] = {}
    while True:
        if isinstance(model, LatentNN):
            parts["contrastive.ref_images"] = model.ref_images.detach().cpu()
            model = model.model
        elif isinstance(model, Defended):
            pre = model.preprocess
            for m in (pre if isinstance(pre, nn.Sequential) else [pre]):
                if isinstance(m, Reformer):
                    parts.update(autoencoder_parts(m.autoencoder))
            model = model.model
        else:
            return model, parts
