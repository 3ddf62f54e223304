"""A user's own images: an .npz (arrays x, y) or a .pt file (dict with tensors x, y).

x may be uint8 (0..255) or float in [0, 1], laid out (N, C, H, W), (N, H, W, C) or (N, H, W).
Loading a .pt file uses weights_only=True: it never runs pickled code.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError, InputError
from ..util import safe_load


def _arrays(path: Path) -> tuple[object, object]:
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                keys = ("x", "y") if "x" in data.files else ("x_test", "y_test")
                if keys[0] not in data.files or keys[1] not in data.files:
                    raise DataError(f"{path}: expected arrays x and y, got {', '.join(data.files) or 'none'}")
                return data[keys[0]], data[keys[1]]
        if path.suffix in (".pt", ".pth"):
            data = safe_load(path, "inputs file", "save plain tensors x and y (torch.save({'x': x, 'y': y}))")
            if not isinstance(data, dict) or "x" not in data or "y" not in data:
                raise DataError(f"{path}: expected a dict with tensors x and y, got {type(data).__name__}")
            return data["x"], data["y"]
    except (OSError, ValueError, EOFError, RuntimeError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path} is truncated or not a readable .npz/.pt file "
                        f"({str(exc).splitlines()[0][:120]})") from None
    raise DataError(f"{path}: expected a .npz or .pt file, got {path.suffix or 'no suffix'}")


def load_inputs(path: str | Path) -> tuple[Tensor, Tensor]:
    """Read and validate images and labels: float32 (N, C, H, W) in [0, 1] and int64 labels."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"inputs file {p} does not exist")
    raw_x, raw_y = _arrays(p)
    x = torch.as_tensor(np.asarray(raw_x) if not isinstance(raw_x, Tensor) else raw_x)
    y = torch.as_tensor(np.asarray(raw_y) if not isinstance(raw_y, Tensor) else raw_y)
    if x.dtype == torch.uint8:
        x = x.float() / 255
    elif x.is_floating_point():
        x = x.float()
    else:
        raise InputError(f"expected uint8 or float images, got dtype {x.dtype}")
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4:
        raise InputError(f"expected images of shape (N, C, H, W), (N, H, W, C) or (N, H, W), got {tuple(x.shape)}")
    if x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        x = x.permute(0, 3, 1, 2).contiguous()
    if torch.isnan(x).any() or torch.isinf(x).any():
        raise InputError(f"expected finite pixel values, got NaN or inf in {p}")
    if float(x.min()) < 0 or float(x.max()) > 1:
        raise InputError(f"expected pixel values in [0, 1] (or uint8), got values in "
                         f"[{float(x.min()):.4g}, {float(x.max()):.4g}]")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise InputError(f"expected {x.shape[0]} labels of shape ({x.shape[0]},), got {tuple(y.shape)}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise InputError(f"expected integer labels, got dtype {y.dtype}")
    return x, y.long()
