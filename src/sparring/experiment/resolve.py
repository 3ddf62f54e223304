"""Names to things: devices, models (an architecture, a pretrained alias, a saved model), the models an
attack or a defense takes as parameters, and attack specs from configs."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..attacks import ATTACKS
from ..config import AttackConfig, parse_eps
from ..data import Dataset
from ..defenses import load_defended
from ..distributed import Dist, rank_device, setup
from ..errors import ConfigError, InputError, UnknownNameError
from ..evaluate import AttackSpec
from ..models import MODELS, PRETRAINED, build_model, load_pretrained, load_weights
from ..paths import sha256_file
from ..threat import Norm
from ..util import dry_run

__all__ = ["attack_specs", "check_fits", "join_job", "resolve_device", "resolve_model", "trained_model"]


def resolve_device(name: str) -> str:
    """"auto" -> cuda when available else cpu; asking for CUDA without it is an error."""
    name = (name or "cpu").strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {name!r} was asked for, but this torch build sees no CUDA device")
    if name != "cpu" and not name.startswith("cuda"):
        raise InputError(f"expected device auto, cpu, cuda or cuda:N, got {name!r}")
    return name


def join_job(name: str) -> tuple[str, Dist, str]:
    """Resolve a device name and join a torchrun job when this process is in one (gloo on CPU, NCCL and
    GPU LOCAL_RANK on CUDA): (the resolved name, the Dist, this process's device)."""
    resolved = resolve_device(name)
    dist = setup(resolved)
    return resolved, dist, rank_device(dist, resolved)


def resolve_model(spec: str, weights: str = "", *, dataset: Dataset | None = None, weights_dir: str | None = None,
                  seed: int = 0) -> tuple[nn.Module, dict[str, Any]]:
    """A model from an architecture name, a pretrained alias, or a saved sparring model path.

    A bare architecture gets its initial weights from `seed` (under a forked RNG), so training it is
    reproducible across processes (a resumed run retrains the same model). Returns (model, info) where
    info names the architecture and the weights' source and sha256. A saved model comes back with the
    defenses it was saved with (sparring.defenses.load_defended).
    """
    path = Path(spec)
    stem_saved = path.with_name(path.name + ".json").is_file()  # the stem given to --out
    if spec not in MODELS and spec not in PRETRAINED and (path.suffix in (".safetensors", ".json") or path.exists()
                                                          or stem_saved):
        model, meta = load_defended(path)
        weight_file = path.with_name(path.name + ".safetensors") if stem_saved else path.with_suffix(".safetensors")
        return model, {"arch": meta.get("arch", spec), "weights": str(path),
                       "weights_sha256": sha256_file(weight_file) if weight_file.exists() else None, "meta": meta}
    if spec in PRETRAINED:
        if weights:
            raise ConfigError(f"{spec} is a pretrained alias and brings its own weights; got weights={weights!r} too")
        return load_pretrained(spec, weights_dir=weights_dir), {"arch": PRETRAINED.meta(spec)["arch"], "weights": spec}
    kwargs: dict[str, Any] = {}
    if dataset is not None and not weights:
        kwargs = {"num_classes": dataset.num_classes, "in_channels": dataset.input_shape[0],
                  "mean": dataset.mean, "std": dataset.std}
    if weights and weights in PRETRAINED:
        meta = PRETRAINED.meta(weights)
        if meta["arch"] != spec:
            raise ConfigError(f"pretrained weights {weights} are for {meta['arch']}, got model {spec}")
        return load_pretrained(weights, weights_dir=weights_dir), {"arch": spec, "weights": weights}
    if spec not in MODELS:
        known = MODELS.names() + PRETRAINED.names()
        close = difflib.get_close_matches(spec, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownNameError(f"unknown model {spec!r}{hint} (expected an architecture, a pretrained alias "
                               f"or a saved model file; known: {', '.join(known)})")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model(spec, **kwargs)
    info: dict[str, Any] = {"arch": spec, "weights": None}
    if weights:
        load_weights(model, weights)
        info.update(weights=weights, weights_sha256=sha256_file(weights))
    return model, info


def trained_model(spec: str, what: str, *, weights_dir: str | None = None) -> nn.Module:
    """A trained model for a parameter that takes one (a pretrained alias or a saved model), in eval mode;
    InputError for a bare architecture."""
    net, info = resolve_model(spec, weights_dir=weights_dir)
    if info.get("weights") is None:
        raise InputError(f"{what} {spec!r} is an untrained architecture: expected a pretrained alias or a saved "
                         "model path")
    return net.eval()


def check_fits(model: nn.Module, shape: tuple[int, ...], num_classes: int, what: str) -> None:
    """A dry forward pass on the model's device: the model must take (1, *shape) and give (1, num_classes)."""
    out = dry_run(model, torch.zeros(1, *shape), what)
    if out.dim() != 2 or out.shape[1] != num_classes:
        raise InputError(f"expected the model to output (B, {num_classes}) logits for {what}, got {tuple(out.shape)}")


def attack_specs(attacks: tuple[AttackConfig, ...], default_eps: tuple[str, ...], *,
                 weights_dir: str | None = None) -> list[AttackSpec]:
    """AttackConfig entries -> AttackSpec with parsed epsilons; the attack's model parameters (transfer's
    surrogate: a name, a path, or several joined by "+"; "self" stays the target) resolved to trained modules."""
    specs = []
    for a in attacks:
        eps = tuple(parse_eps(e) for e in (a.eps or default_eps))
        models: dict[str, nn.Module | list[nn.Module]] = {}
        for key in ATTACKS.meta(a.name).get("model_params", ()):
            value = a.params.get(key)
            if isinstance(value, str) and value != "self":
                nets = [trained_model(ref, key, weights_dir=weights_dir) for ref in value.split("+") if ref]
                models[key] = nets[0] if len(nets) == 1 else nets
        specs.append(AttackSpec(a.name, Norm.parse(a.norm), eps, dict(a.params), a.targeted, a.target, a.label, models))
    labels = [s.label for s in specs]
    dupes = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dupes:
        raise ConfigError(f"two attacks share the label {dupes[0]!r}; give each a distinct label")
    return specs
