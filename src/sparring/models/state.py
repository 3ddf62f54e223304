"""Reading state dicts from checkpoint files, safely: safetensors or ``torch.load(weights_only=True)``.

A pickle that names any callable (``os.system`` in a ``__reduce__``) is refused by the
weights-only unpickler before anything runs; every failure is a one-line DataError.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import DataError

__all__ = ["read_state_dict"]

_PREFIXES = ("module.", "_orig_mod.")
def _why(exc: BaseException) -> str:
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _names(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


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
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        else:
            with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": noise for users
                warnings.simplefilter("ignore", UserWarning)
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()]
        detail = next((ln for ln in lines if not ln.startswith(("Please file", "Check the doc"))), _why(exc))
        if "GLOBAL" in detail:
            raise DataError(f"checkpoint {path} holds pickled code, refused by weights_only loading "
                            f"({detail[:120]}); convert it to safetensors or a plain state dict") from None  # fmt: skip
        raise DataError(f"checkpoint {path} is truncated or not a checkpoint ({detail[:120]})") from None
    except Exception as exc:  # zip, EOF, safetensors and torch errors all mean "unreadable"
        raise DataError(f"checkpoint {path} is truncated or not a checkpoint ({_why(exc)})") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise DataError(f"checkpoint {path} holds no state dict (got {type(obj).__name__})")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise DataError(f"checkpoint {path} holds no state dict: non-tensor entries {_names(bad)}")
    out: dict[str, Tensor] = {}
    for key, value in obj.items():
        for prefix in _PREFIXES:
            key = key.removeprefix(prefix)
        out[key] = value
    return out
