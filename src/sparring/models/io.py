"""Checkpoint IO: load third-party state dicts safely; save / load sparring models atomically.

Safe by default: ``.pt``/``.pth``/``.th`` files go through ``torch.load(weights_only=True)``
(a pickle that names any callable is refused, nothing runs); sparring writes safetensors plus
a JSON sidecar and never pickles.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import DataError, InputError
from .normalize import Normalized
from .state import _names, _why, read_state_dict

__all__ = ["load_model", "load_weights", "read_state_dict", "save_model"]

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
    problems = [f"missing keys {_names(missing)}" if missing else "",
                f"unexpected keys {_names(unexpected)}" if unexpected else "",
                f"shape mismatch {_names(shapes, 2)}" if shapes else ""]  # fmt: skip
    if any(problems):
        raise DataError(f"checkpoint {path} does not fit {arch}: " + "; ".join(p for p in problems if p))
    for key in expected:
        if key not in state:
            state[key] = expected[key]
    try:
        target.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError) as exc:
        raise DataError(f"checkpoint {path} does not fit {arch} ({_why(exc)})") from None
    return model


def _stem(path: str | Path) -> Path:
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".safetensors", ".json") else path


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then os.replace onto ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0o022)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy / torch scalars and arrays
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serializable")


def save_model(model: Normalized, path: str | Path, *, meta: dict[str, Any] | None = None,
               parts: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write ``<stem>.safetensors`` (weights) and ``<stem>.json`` (arch, arch_kwargs, mean, std,
    num_classes, sha256 of the weights, plus ``meta``), each atomically; weights first. ``parts``
    (tensors of trained defense parts, see sparring.defenses.build) go to ``<stem>.parts.safetensors``.

    Returns:
        (weights path, json path).

    Example:
        >>> save_model(model, "runs/digits", meta={"dataset": "digits"})  # doctest: +SKIP
    """
    from safetensors.torch import save

    from .build import MODELS

    if not isinstance(model, Normalized) or model.arch not in MODELS:
        raise InputError("save_model expects a model from build_model (a Normalized with a registered arch), "
                         f"got {type(model).__name__} arch {getattr(model, 'arch', None)!r}")  # fmt: skip
    clash = sorted(set(meta or {}) & set(_RESERVED))
    if clash:
        raise InputError(f"meta may not set reserved key(s) {', '.join(clash)}")
    stem = _stem(path)
    weights, sidecar = stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")
    def pack(tensors: dict[str, Any]) -> bytes:
        return save({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()})

    data, extra = pack(model.state_dict()), pack(parts) if parts else None
    info = {"format": "sparring-model", "format_version": 1, "arch": model.arch, "arch_kwargs": model.arch_kwargs,
            "mean": list(model.mean), "std": list(model.std), "num_classes": model.num_classes,
            "weights_file": weights.name, "weights_sha256": hashlib.sha256(data).hexdigest(), **(meta or {})}  # fmt: skip
    if extra is not None:
        info.update(parts_file=stem.name + ".parts.safetensors", parts_sha256=hashlib.sha256(extra).hexdigest())
    try:
        text = json.dumps(info, indent=2, default=_jsonable)
    except (TypeError, ValueError) as exc:
        raise InputError(f"meta for {sidecar} is not JSON-serializable ({_why(exc)})") from None
    stem.parent.mkdir(parents=True, exist_ok=True)
    if extra is not None:
        _write_atomic(stem.with_name(info["parts_file"]), extra)
    _write_atomic(weights, data)
    _write_atomic(sidecar, (text + "\n").encode())
    return weights, sidecar


def _read_parts(stem: Path, info: dict[str, Any], sidecar: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    from ..paths import sha256_file

    path = stem.with_name(Path(str(info["parts_file"])).name)  # a bare name: never outside the folder
    if not path.is_file():
        raise DataError(f"defense parts {path} not found (described by {sidecar.name})")
    if sha256_file(path) != info.get("parts_sha256"):
        raise DataError(f"defense parts {path} do not match {sidecar.name} (sha256 differs); "
                        "the pair was not written together")
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:
        raise DataError(f"defense parts {path} are truncated or not safetensors ({_why(exc)})") from None


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model written by ``save_model``; ``path`` is the .safetensors, the .json or the stem.

    Returns:
        (model in eval mode, the JSON sidecar as a dict, including the saved meta). A sidecar with a
        "defense" list (from ``sparring defend``) gives the network with those defenses applied, e.g.
        ``Defended(GaussianBlur(1.5), net)`` (``sparring.defenses.build.apply_defenses``).
    Raises:
        DataError: missing/corrupt files, or weights that do not match the sidecar's sha256.

    Example:
        >>> model, info = load_model("runs/digits.safetensors")  # doctest: +SKIP
    """
    from ..paths import sha256_file
    from .build import build_model

    stem = _stem(path)
    weights, sidecar = stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")
    if not sidecar.is_file():
        raise DataError(f"model description {sidecar} not found (save_model writes it next to {weights.name})")
    try:
        info = json.loads(sidecar.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"model description {sidecar} is truncated or not JSON ({_why(exc)})") from None
    if not isinstance(info, dict) or not all(k in info for k in ("arch", "arch_kwargs", "mean", "std")):
        raise DataError(f"model description {sidecar} lacks arch, arch_kwargs, mean or std")
    if not weights.is_file():
        raise DataError(f"checkpoint {weights} not found (described by {sidecar.name})")
    expected = info.get("weights_sha256")
    if expected and sha256_file(weights) != expected:
        raise DataError(f"checkpoint {weights} does not match {sidecar.name} (sha256 differs); "
                        "the pair was not written together")  # fmt: skip
    model = build_model(info["arch"], mean=info["mean"], std=info["std"], **dict(info["arch_kwargs"]))
    load_weights(model, weights)
    if info.get("defense"):  # written by `sparring defend`: the network's weights, then its defenses rebuilt
        from ..defenses.build import apply_defenses

        parts = _read_parts(stem, info, sidecar) if info.get("parts_file") else None
        return apply_defenses(model, info["defense"], parts).eval(), info  # type: ignore[return-value]
    return model.eval(), info
