"""Checkpoint IO: load third-party state dicts safely; save / load sparring models atomically.

Safe by default: ``.pt``/``.pth``/``.th`` files go through ``torch.load(weights_only=True)``
(a pickle that names any callable is refused, nothing runs); sparring writes safetensors plus
a JSON sidecar and never pickles.

A model saved with defenses (``sparring defend``) holds the network's weights, its trained defense parts
(``<stem>.parts.safetensors``) and the defense chain in the sidecar. ``load_network`` reads those three
back; putting the defenses on again is the defenses layer's job (``sparring.defenses.load_defended``,
which ``sparring.load_model`` is): models never import defenses.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save
from torch import Tensor, nn

from ..errors import DataError, InputError
from ..paths import sha256_file
from ..util import first_line, names, write_atomic
from .build import MODELS, build_model
from .normalize import Normalized
from .state import read_state_dict

__all__ = ["load_network", "load_weights", "read_state_dict", "save_model", "stem"]

_RESERVED = ("format", "format_version", "arch", "arch_kwargs", "mean", "std", "num_classes",
             "weights_file", "weights_sha256", "parts_file", "parts_sha256")  # fmt: skip


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a checkpoint strictly into ``model`` (a ``Normalized`` or any module) in place.

    Keys starting with "net." go into the whole ``Normalized`` model, other keys into
    ``model.net``. Missing ``num_batches_tracked`` buffers (old PyTorch checkpoints) are filled.

    Raises:
        DataError: one line for unreadable files, missing/unexpected keys or shape mismatches.

    Example:
        >>> load_weights(build_model("resnet20"), "akamaster_resnet20-12fca82f.th")  # doctest: +SKIP
    """
    state = read_state_dict(path)
    target = model
    if isinstance(model, Normalized) and not all(k.startswith("net.") for k in state):
        target = model.net
    arch = getattr(model, "arch", type(model).__name__)
    expected = target.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
              for k in state if k in expected and state[k].shape != expected[k].shape]  # fmt: skip
    problems = [f"missing keys {names(missing)}" if missing else "",
                f"unexpected keys {names(unexpected)}" if unexpected else "",
                f"shape mismatch {names(shapes, 2)}" if shapes else ""]
    if any(problems):
        raise DataError(f"checkpoint {path} does not fit {arch}: " + "; ".join(p for p in problems if p))
    for key in expected:
        if key not in state:
            state[key] = expected[key]
    try:
        target.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError) as exc:
        raise DataError(f"checkpoint {path} does not fit {arch} ({first_line(exc)})") from None
    return model


def stem(path: str | Path) -> Path:
    """The path stem of a saved model: ``path`` without a .safetensors / .json suffix."""
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".safetensors", ".json") else path


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy / torch scalars and arrays
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serializable")


def save_model(model: nn.Module, path: str | Path, *, meta: dict[str, Any] | None = None,
               parts: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write ``<stem>.safetensors`` (weights) and ``<stem>.json`` (arch, arch_kwargs, mean, std,
    num_classes, sha256 of the weights, plus ``meta``), each atomically; weights first. ``parts``
    (tensors of trained defense parts, see sparring.defenses.build) go to ``<stem>.parts.safetensors``.

    Returns:
        (weights path, json path).

    Example:
        >>> save_model(model, "runs/digits", meta={"dataset": "digits"})  # doctest: +SKIP
    """
    if not isinstance(model, Normalized) or model.arch not in MODELS:
        raise InputError("save_model expects a model from build_model (a Normalized with a registered arch), "
                         f"got {type(model).__name__} arch {getattr(model, 'arch', None)!r}")  # fmt: skip
    clash = sorted(set(meta or {}) & set(_RESERVED))
    if clash:
        raise InputError(f"meta may not set reserved key(s) {', '.join(clash)}")
    base = stem(path)
    weights, sidecar = base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".json")

    def pack(tensors: dict[str, Any]) -> bytes:
        return save({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()})

    data, extra = pack(model.state_dict()), pack(parts) if parts else None
    info = {"format": "sparring-model", "format_version": 1, "arch": model.arch, "arch_kwargs": model.arch_kwargs,
            "mean": list(model.mean), "std": list(model.std), "num_classes": model.num_classes,
            "weights_file": weights.name, "weights_sha256": hashlib.sha256(data).hexdigest(), **(meta or {})}
    if extra is not None:
        info.update(parts_file=base.name + ".parts.safetensors", parts_sha256=hashlib.sha256(extra).hexdigest())
    try:
        text = json.dumps(info, indent=2, default=_jsonable)
    except (TypeError, ValueError) as exc:
        raise InputError(f"meta for {sidecar} is not JSON-serializable ({first_line(exc)})") from None
    if extra is not None:
        write_atomic(base.with_name(info["parts_file"]), extra)
    write_atomic(weights, data)
    write_atomic(sidecar, text + "\n")
    return weights, sidecar


def _read_parts(base: Path, info: dict[str, Any], sidecar: Path) -> dict[str, Tensor]:
    path = base.with_name(Path(str(info["parts_file"])).name)  # a bare name: never outside the folder
    if not path.is_file():
        raise DataError(f"defense parts {path} not found (described by {sidecar.name})")
    if sha256_file(path) != info.get("parts_sha256"):
        raise DataError(f"defense parts {path} do not match {sidecar.name} (sha256 differs); "
                        "the pair was not written together")
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:
        raise DataError(f"defense parts {path} are truncated or not safetensors ({first_line(exc)})") from None


def load_network(path: str | Path) -> tuple[Normalized, dict[str, Any], dict[str, Tensor]]:
    """Rebuild the network written by ``save_model``; ``path`` is the .safetensors, the .json or the stem.

    Returns:
        (the network in eval mode, the JSON sidecar as a dict with the saved meta, the trained defense parts
        (empty when none)). The defense chain, when the model was saved with one, is ``info["defense"]``:
        ``sparring.defenses.load_defended`` puts it back on the network.
    Raises:
        DataError: missing/corrupt files, or weights that do not match the sidecar's sha256.

    Example:
        >>> net, info, parts = load_network("runs/digits.safetensors")  # doctest: +SKIP
    """
    base = stem(path)
    weights, sidecar = base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".json")
    if not sidecar.is_file():
        raise DataError(f"model description {sidecar} not found (save_model writes it next to {weights.name})")
    try:
        info = json.loads(sidecar.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"model description {sidecar} is truncated or not JSON ({first_line(exc)})") from None
    if not isinstance(info, dict) or not all(k in info for k in ("arch", "arch_kwargs", "mean", "std")):
        raise DataError(f"model description {sidecar} lacks arch, arch_kwargs, mean or std")
    if not weights.is_file():
        raise DataError(f"checkpoint {weights} not found (described by {sidecar.name})")
    expected = info.get("weights_sha256")
    if expected and sha256_file(weights) != expected:
        raise DataError(f"checkpoint {weights} does not match {sidecar.name} (sha256 differs); "
                        "the pair was not written together")
    model = build_model(info["arch"], mean=info["mean"], std=info["std"], **dict(info["arch_kwargs"]))
    load_weights(model, weights)
    parts = _read_parts(base, info, sidecar) if info.get("parts_file") else {}
    return model.eval(), info, parts
