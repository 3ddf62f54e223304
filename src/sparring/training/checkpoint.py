"""Resumable training: the training-state file that `sparring.training.train` keeps beside its checkpoint.

`train(..., checkpoint="models/digits")` writes ``models/digits.train-state.pt`` after every epoch
(rank 0 under torchrun; a temp file, fsync, then os.replace, so a kill never leaves half a file):
model, optimizer, LR schedule and fp16 gradient-scaler state, the finished epoch, whether training
is done, the history, the objective's state and the settings a resumed run must share. With
``resume=True`` every process reads it back with ``torch.load(weights_only=True)`` (a file that
would run code is refused, nothing runs) and training continues from the next epoch.

    path = state_path("models/digits")                  # models/digits.train-state.pt
    saved = read_state(path, settings, dist)             # None when there is none yet
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..distributed import Dist
from ..errors import ConfigError, DataError
from ..models import stem
from ..util import first_line, safe_load, write_atomic
from .objective import Objective

__all__ = ["beside", "discard", "mismatch", "partial", "read_state", "restore_state", "state_path", "teacher_path",
           "write_state"]

FORMAT, VERSION = "sparring-train-state", 1
_KEYS = ("format", "version", "settings", "epoch", "done", "history", "model", "optimizer", "scheduler", "scaler",
         "hooks")  # fmt: skip


def beside(checkpoint: str | Path, suffix: str) -> Path:
    """``<stem><suffix>`` next to a checkpoint stem (a .safetensors / .json suffix is dropped first)."""
    base = stem(checkpoint)
    return base.with_name(base.name + suffix)


def state_path(checkpoint: str | Path) -> Path:
    """``<stem>.train-state.pt`` beside the checkpoint stem."""
    return beside(checkpoint, ".train-state.pt")


def teacher_path(checkpoint: str | Path) -> Path:
    """``<stem>.teacher``: the checkpoint stem of distillation's teacher."""
    return beside(checkpoint, ".teacher")


def partial(out: str | Path) -> Path:
    """The checkpoint stem `sparring train` / `defend` train into, ``<OUT stem>.partial``: the latest epoch's
    weights and the training state stay there until the finished model is saved at OUT, so OUT never holds
    a half-trained model (nor a defended model without its defenses)."""
    return beside(out, ".partial")


def discard(checkpoint: str | Path, *, weights: bool) -> None:
    """Remove what a finished training kept at ``checkpoint``: its state file, distillation's teacher
    checkpoint (``<stem>.teacher.*``) and, with ``weights``, the per-epoch weights themselves."""
    teacher = teacher_path(checkpoint)
    files = [state_path(checkpoint), beside(teacher, ".safetensors"), beside(teacher, ".json"), state_path(teacher)]
    if weights:
        files += [beside(checkpoint, ".safetensors"), beside(checkpoint, ".json")]
    for path in files:
        path.unlink(missing_ok=True)


def mismatch(saved: dict[str, Any], given: dict[str, Any]) -> str | None:
    """"KEY was SAVED, got GIVEN" for the first setting that differs (keys of either dict), else None."""
    for key in [*given, *(k for k in saved if k not in given)]:
        old, new = saved.get(key, "(absent)"), given.get(key, "(absent)")
        if old != new:
            return f"{key} was {old!r}, got {new!r}"
    return None


def write_state(path: Path, *, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any,
                objective: Objective, epoch: int, done: bool, history: list[dict[str, Any]],
                settings: dict[str, Any]) -> None:
    """Serialize the training state with torch.save and write it atomically to ``path``."""
    state = {"format": FORMAT, "version": VERSION, "settings": settings, "epoch": epoch, "done": done,
             "history": history, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": None if scheduler is None else scheduler.state_dict(),
             "scaler": None if scaler is None else scaler.state_dict(), "hooks": objective.state_dict()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomic(path, buffer.getvalue())


def _load(path: Path) -> dict[str, Any]:
    state = safe_load(path, "training state", "delete it to train from scratch")
    if not isinstance(state, dict) or state.get("format") != FORMAT or any(k not in state for k in _KEYS):
        raise DataError(f"expected {path} to be a {FORMAT} file with keys {', '.join(_KEYS)}, got "
                        f"{sorted(state) if isinstance(state, dict) else type(state).__name__}")
    if state["version"] != VERSION:
        raise DataError(f"expected training state version {VERSION} in {path}, got {state['version']!r}")
    return state


def _legacy(saved: dict[str, Any]) -> dict[str, Any]:
    """Settings written before objectives (batch_loss / hook_state keys): plain cross-entropy training reads
    as the CrossEntropy objective; any other recipe keeps its old keys, so resuming it is refused."""
    if "batch_loss" not in saved or saved.get("batch_loss") is not None or saved.get("hook_state") is not None:
        return saved
    return {**{k: v for k, v in saved.items() if k not in ("batch_loss", "hook_state")}, "objective": "CrossEntropy"}


def read_state(path: Path, settings: dict[str, Any], dist: Dist) -> dict[str, Any] | None:
    """The saved state at ``path`` (None when absent) after checking its settings against ``settings``.

    Under torchrun every process calls it: a barrier first (rank 0 has finished any earlier write),
    then every process reads the same file; a file that only some processes see is an error.
    Raises: ConfigError naming the first setting that differs; DataError for a refused or broken file.
    """
    dist.barrier()
    exists = path.is_file()
    if dist.active:
        seen = int(dist.total(1 if exists else 0))
        if 0 < seen < dist.world:
            raise DataError(f"training state {path} is visible to {seen} of {dist.world} processes; resuming "
                            "needs a folder every process sees (a shared disk)")
    if not exists:
        return None
    state = _load(path)
    diff = mismatch(_legacy(state["settings"]) if isinstance(state["settings"], dict) else {}, settings)
    if diff is not None:
        hint = (" (start as many processes as the interrupted job: each process's batch share and BatchNorm "
                "statistics depend on it)" if diff.startswith("processes ") else "")
        raise ConfigError(f"cannot resume from {path}: {diff}{hint}; resume with the same settings, or train "
                          "without resume to start over")
    return state


def restore_state(state: dict[str, Any], path: Path, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                  scheduler: Any, scaler: Any, objective: Objective) -> None:
    """Load a state from read_state into the model, optimizer, schedule, scaler and objective (in place)."""
    try:
        model.load_state_dict(state["model"], strict=True)
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        if scaler is not None:
            scaler.load_state_dict(state["scaler"])
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"training state {path} does not fit this model and optimizer ({first_line(exc)})") from None
    try:
        objective.load_state_dict(state["hooks"] or {})
    except ConfigError as exc:
        raise ConfigError(f"cannot resume from {path}: {exc}; resume with the same settings, or train "
                          "without resume to start over") from None
