"""Small helpers every layer shares: argument checks with one-line errors, atomic writes, safe loading of
torch files, per-sample broadcasting, a model's device and dtype, frozen models, a dry forward pass.

Each exists once here; the modules above call these instead of keeping their own copy.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from .errors import DataError, InputError

__all__ = ["attack_view", "check_choice", "check_device", "check_flag", "check_images", "check_number", "dry_run",
           "first_line", "frozen", "model_device", "model_dtype", "names", "rows", "safe_load", "write_atomic"]

N = TypeVar("N", int, float)


# ---------------------------------------------------------------- argument checks


def check_number(value: Any, what: str, *, integer: bool = False, low: float | None = None,
                 high: float | None = None, low_open: bool = False, high_open: bool = False) -> Any:
    """``value`` when it is a finite number (an int with ``integer``; never a bool) in the given range, else
    InputError "expected WHAT to be an integer >= 1, got 0". Returns the value unchanged (ints stay ints).

        >>> check_number(3, "steps", integer=True, low=1)
        3
    """
    kind = "an integer" if integer else "a number" if low is not None and high is not None else "a finite number"
    ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise InputError(f"expected {what} to be {kind}{_range(low, high, low_open, high_open)}, got {value!r}")
    return value


def _range(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high:g}"
    return ""


def check_flag(value: Any, what: str) -> bool:
    """``value`` when it is True or False, else InputError."""
    if not isinstance(value, bool):
        raise InputError(f"expected {what} to be True or False, got {value!r}")
    return value


def check_choice(value: Any, what: str, choices: Sequence[Any]) -> Any:
    """``value`` when it is one of ``choices``, else InputError naming them."""
    if value not in choices:
        raise InputError(f"expected {what} to be one of {', '.join(map(str, choices))}, got {value!r}")
    return value


def check_device(device: str | torch.device) -> torch.device:
    """torch.device(device), or InputError for a name torch does not know."""
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"expected a device such as cpu, cuda or cuda:0, got {device!r}") from None


def check_images(x: Any, what: str = "images", *, bounds: tuple[float, float] | None = None,
                 empty_ok: bool = False) -> Tensor:
    """``x`` when it is a finite floating-point (N, C, H, W) tensor (N >= 1 unless empty_ok), within
    ``bounds`` when given; else InputError "expected WHAT as a float (N, C, H, W) tensor, got ...".

        >>> check_images(torch.rand(2, 1, 8, 8), "training")
    """
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point() or (len(x) == 0 and not empty_ok):
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise InputError(f"expected {what} as a non-empty float (N, C, H, W) tensor, got {got}")
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise InputError(f"expected finite {what}, got NaN or infinite values")
    if bounds is not None and x.numel():
        lo, hi = float(x.min()), float(x.max())
        if lo < bounds[0] or hi > bounds[1]:
            raise InputError(f"expected {what} in [{bounds[0]:g}, {bounds[1]:g}], got values in [{lo:.4g}, {hi:.4g}]")
    return x


# ---------------------------------------------------------------- messages


def first_line(exc: BaseException, limit: int = 160) -> str:
    """"TypeName: first line of the message", at most ``limit`` characters (for one-line errors)."""
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def names(keys: Sequence[str], limit: int = 4) -> str:
    """The first ``limit`` keys joined by commas, "(+N more)" after them."""
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


# ---------------------------------------------------------------- files


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` (text is UTF-8) to ``path`` through a unique temp file in the same folder, fsync, then
    os.replace: a reader, or a kill, never sees half a file. Creates the folder; usual permissions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0o022)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def safe_load(path: str | Path, what: str, remedy: str = "") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU: a file that would run code is refused before
    anything runs. Every failure is a one-line DataError naming ``what`` (e.g. "checkpoint") and ``remedy``.
    """
    path = Path(path)
    tail = f"; {remedy}" if remedy else ""
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": noise for users
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = next((ln.removeprefix("WeightsUnpickler error: ") for ln in lines if "WeightsUnpickler error" in ln),
                      None) or next((ln for ln in lines[1:] if not ln.startswith(("Please file", "Check the doc"))),
                                    first_line(exc))
        if "GLOBAL" in str(exc):
            raise DataError(f"{what} {path} holds pickled code, refused by weights_only loading ({detail[:120]})"
                            f"{tail}") from None
        raise DataError(f"{what} {path} is truncated or not a {what} ({detail[:120]}){tail}") from None
    except Exception as exc:  # zip, EOF and torch errors all mean "unreadable"
        raise DataError(f"{what} {path} is truncated or not a {what} ({first_line(exc)}){tail}") from None


# ---------------------------------------------------------------- tensors and models


def rows(values: Tensor, like: Tensor) -> Tensor:
    """A per-sample vector (B,) shaped (B, 1, 1, ...) to broadcast against a batch like ``like``."""
    return values.reshape(-1, *([1] * (like.dim() - 1)))


def model_device(model: nn.Module) -> torch.device:
    """Where the model's first parameter (else buffer) lives; the CPU for a model with neither."""
    tensor: Tensor | None = next(model.parameters(), None)
    tensor = tensor if tensor is not None else next(model.buffers(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """Floating dtype of the model's first parameter (float32 for a parameter-free model)."""
    param = next(model.parameters(), None)
    return param.dtype if param is not None and param.is_floating_point() else torch.float32


def attack_view(model: nn.Module) -> nn.Module:
    """``model.for_attack()`` when the model gives one (a defended model swaps in its BPDA surrogates there),
    else the model: what an attack differentiates through, while the model itself judges success."""
    view = getattr(model, "for_attack", None)
    return view() if callable(view) else model


@contextlib.contextmanager
def frozen(*models: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients within the block (attacks craft against fixed weights); the
    modes and requires_grad flags come back afterwards, whatever happens inside."""
    modes = [m.training for m in models]
    flags = [(p, p.requires_grad) for m in models for p in m.parameters()]
    try:
        for m in models:
            m.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in zip(models, modes):
            m.train(mode)


def dry_run(model: nn.Module, x: Tensor, what: str) -> Tensor:
    """model(x) in eval mode without gradients, on the model's device: the output, or InputError "model does
    not accept WHAT images of shape ..." when the model cannot take them."""
    model.eval()
    try:
        with torch.inference_mode():
            return model(x.to(model_device(model), model_dtype(model)))
    except RuntimeError as exc:
        raise InputError(f"model does not accept {what} images of shape {tuple(x.shape[1:])}: "
                         f"{str(exc).splitlines()[0]}") from None
