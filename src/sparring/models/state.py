"""Reading state dicts from checkpoint files, safely: safetensors or ``torch.load(weights_only=True)``.

A pickle that names any callable (``os.system`` in a ``__reduce__``) is refused by the
weights-only unpickler before anything runs; every failure is a one-line DataError.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from torch import Tensor

from ..errors import DataError
from ..util import first_line, names, safe_load

__all__ = ["read_state_dict"]

_PREFIXES = ("module.", "_orig_mod.")


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from .safetensors or a torch file (weights_only), unwrapping
    ``{"state_dict": ...}`` / ``{"model": ...}`` and stripping "module." prefixes.

    Raises:
        DataError: missing, truncated or corrupt file; pickled code; no tensors inside.

    Example:
        >>> sd = read_state_dict("akamaster_resnet20-12fca82f.th")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint {path} not found" if not path.exists() else f"checkpoint {path} is not a file")
    obj: Any
    if path.suffix.lower() == ".safetensors":
        try:
            obj = load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types for a broken file
            raise DataError(f"checkpoint {path} is truncated or not a checkpoint ({first_line(exc)})") from None
    else:
        obj = safe_load(path, "checkpoint", "convert it to safetensors or a plain state dict")
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise DataError(f"checkpoint {path} holds no state dict (got {type(obj).__name__})")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise DataError(f"checkpoint {path} holds no state dict: non-tensor entries {names(bad)}")
    out: dict[str, Tensor] = {}
    for key, value in obj.items():
        for prefix in _PREFIXES:
            key = key.removeprefix(prefix)
        out[key] = value
    return out
