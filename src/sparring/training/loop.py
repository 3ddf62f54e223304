"""The one training loop, in three parts: ``prepare`` (checks, optimizer, schedule, resume), ``run_epoch``
and ``save_epoch`` (the training state, then the weights); ``train`` runs them.

Randomness is explicit: shuffling and augmentation draw from a torch.Generator seeded from
epoch_key(seed, epoch) (sparring.rng); layers that use the global RNG (Dropout) run inside ``torch.random.fork_rng``
reseeded the same way, so the caller's global RNG state is untouched, a run is reproducible from its seed,
and a run resumed after epoch k (sparring.training.checkpoint) ends with the weights of an uninterrupted one.
Each epoch is logged (logger "sparring.training") in one line.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..config import TrainSettings
from ..distributed import Dist, current
from ..errors import ConfigError, InputError
from ..models import MODELS, Normalized, save_model
from ..precision import autocast
from ..rng import LOCAL_SALT, epoch_key
from ..util import check_device, check_flag, check_images, check_number, model_dtype
from .augment import AUGMENTATIONS
from .checkpoint import read_state, restore_state, state_path, write_state
from .objective import CrossEntropy, Objective
from .optim import OPTIMIZERS, SCHEDULES
from .settings import check_settings

__all__ = ["Run", "check_data", "evaluate_accuracy", "prepare", "run_epoch", "save_epoch", "train"]

log = logging.getLogger(__name__.rpartition(".")[0])


def check_data(x: Any, y: Any, what: str) -> tuple[Tensor, Tensor]:
    """Images (N, C, H, W) float in [0, 1] and integer labels (N,) >= 0, else InputError."""
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    check_images(x, f"{what} images", bounds=(0.0, 1.0))
    if y.dim() != 1 or y.is_floating_point() or y.dtype == torch.bool:
        raise InputError(f"expected {what} labels as an integer (N,) tensor, got {y.dtype} {tuple(y.shape)}")
    if len(x) != len(y):
        raise InputError(f"expected as many {what} labels as images (>= 1), got {len(y)} labels for {len(x)} images")
    if int(y.min()) < 0:
        raise InputError(f"expected {what} labels >= 0, got {int(y.min())}")
    return x, y.long()


def _network(model: nn.Module) -> Normalized:
    """The Normalized (registered arch) that ``checkpoint`` saves: the model, or the one inside it."""
    found = [m for m in model.modules() if isinstance(m, Normalized)]
    if len(found) != 1 or found[0].arch not in MODELS:
        raise ConfigError("checkpoint= needs a model from build_model (a Normalized with a registered arch) or a "
                          f"module around exactly one, got {type(model).__name__} holding {len(found)}")
    return found[0]


def _batches(n: int, batch_size: int, generator: torch.Generator, processes: int = 1) -> Iterable[Tensor]:
    """Shuffled index batches; a trailing batch with fewer than 2 samples per process is dropped
    (BatchNorm needs two)."""
    parts = torch.randperm(n, generator=generator).split(batch_size)
    return parts[:-1] if len(parts) > 1 and len(parts[-1]) < 2 * processes else parts


@dataclass
class Run:
    """One training run as ``prepare`` set it up: the data on the CPU, the model on its device, the optimizer
    and schedule, and where it stands (``history``, the next epoch ``first``; ``finished`` when a resumed run
    had already ended)."""

    model: nn.Module
    net: nn.Module  # what the batches go through: the model, in DistributedDataParallel, compiled
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor | None
    y_val: Tensor | None
    settings: TrainSettings
    objective: Objective
    seed: int
    device: torch.device
    dist: Dist
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    steps: int  # optimizer steps per epoch
    label: str  # what is trained, first on its log lines ("teacher")
    progress: bool
    checkpoint: Path | None
    network: Normalized | None  # the network whose weights ``checkpoint`` saves
    record: dict[str, Any]  # the settings a resumed run must share
    memory_format: torch.memory_format | None
    history: list[dict[str, Any]] = field(default_factory=list)
    first: int = 1
    finished: bool = False

    def say(self, line: str) -> None:
        if self.dist.main:
            log.info(f"{self.label} {line}" if self.label else line)


def prepare(model: nn.Module, x_train: Tensor, y_train: Tensor, settings: TrainSettings, *,
            objective: Objective | None = None, seed: int = 0, device: str | torch.device = "cpu",
            x_val: Tensor | None = None, y_val: Tensor | None = None, checkpoint: str | Path | None = None,
            resume: bool = False, label: str = "", progress: bool = False) -> Run:
    """Check everything, move the model to ``device``, build the optimizer and schedule, and restore the
    training state when resuming (see ``train``). Raises InputError / ConfigError before any epoch runs."""
    settings = check_settings(settings)
    objective = CrossEntropy() if objective is None else objective
    if not isinstance(objective, Objective):
        raise InputError(f"expected objective to be a sparring.training.Objective, got {type(objective).__name__}")
    x_train, y_train = check_data(x_train, y_train, "training")
    if (x_val is None) != (y_val is None):
        raise InputError("expected x_val and y_val both given or both None")
    if x_val is not None:
        x_val, y_val = check_data(x_val, y_val, "validation")
    if len(x_train) < 2:
        raise InputError(f"expected at least 2 training images, got {len(x_train)}")
    network = _network(model) if checkpoint is not None else None
    check_flag(resume, "resume")
    if resume and checkpoint is None:
        raise ConfigError("resume=True needs checkpoint=, the path stem whose .train-state.pt it continues from")
    check_number(seed, "seed", integer=True, low=0)
    dev = check_device(device)
    model.to(dev)
    objective.check(model, x_train, y_train)
    dist = current()
    if dist.active and settings.batch_size < 2 * dist.world:
        raise InputError(f"expected a batch size of at least 2 per process ({2 * dist.world}), got "
                         f"{settings.batch_size}")
    n, batch = len(x_train), settings.batch_size
    steps = n // batch + (1 if n % batch >= 2 * dist.world else 0)
    optimizer = _optimizer(model, settings)
    scheduler = _schedule(optimizer, settings, steps)
    scaler = torch.amp.GradScaler(dev.type) if settings.precision == "fp16" else None
    record = {"epochs": settings.epochs, "batch_size": batch, "optimizer": settings.optimizer, "lr": settings.lr,
              "momentum": settings.momentum, "weight_decay": settings.weight_decay, "schedule": settings.schedule,
              "augment": settings.augment, "pad": settings.pad, "seed": seed, "train_images": n,
              "processes": dist.world, "precision": settings.precision, "objective": objective.name}
    fmt = torch.channels_last if settings.channels_last else None
    run = Run(model, model, x_train, y_train, x_val, y_val, settings, objective, seed, dev, dist, optimizer,
              scheduler, scaler, steps, label, progress, None if checkpoint is None else Path(checkpoint), network,
              record, fmt)
    if resume and run.checkpoint is not None:
        _resume(run)
    if not run.finished:
        if fmt is not None:
            cast(Any, model).to(memory_format=fmt)  # Module.to takes it; torch's stubs do not say so
        # under torchrun: gradients averaged over the ranks; buffers are not broadcast at each forward, so the
        # attacks of adversarial training may run any number of forwards on one rank
        net: nn.Module = model
        if dist.active:
            net = DistributedDataParallel(model, device_ids=[dev.index or 0] if dev.type == "cuda" else None,
                                          broadcast_buffers=False)
        run.net = torch.compile(net) if settings.compile else net  # type: ignore[assignment]
    return run


def _optimizer(model: nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    return OPTIMIZERS.get(settings.optimizer)(model.parameters(), lr=settings.lr, momentum=settings.momentum,
                                              weight_decay=settings.weight_decay)


def _schedule(optimizer: torch.optim.Optimizer, settings: TrainSettings, steps: int) -> Any:
    return SCHEDULES.get(settings.schedule)(optimizer, lr=settings.lr, epochs=settings.epochs, steps_per_epoch=steps)


def _resume(run: Run) -> None:
    assert run.checkpoint is not None
    path = state_path(run.checkpoint)
    saved = read_state(path, run.record, run.dist)  # every rank reads rank 0's file
    if saved is None:
        run.say(f"no training state at {path}: training from scratch")
        return
    restore_state(saved, path, model=run.model, optimizer=run.optimizer, scheduler=run.scheduler,
                  scaler=run.scaler, objective=run.objective)
    run.history, run.first = list(saved["history"]), int(saved["epoch"]) + 1
    run.say(f"resumed from {path} after epoch {saved['epoch']}/{run.settings.epochs}"
            + (": training had finished" if saved["done"] else ""))
    if saved["done"]:
        run.finished = True
        run.model.eval()


def run_epoch(run: Run, epoch: int) -> tuple[dict[str, Any], bool]:
    """Train one epoch: (its record, whether the objective stops training after it). The model ends in
    train mode's counterpart as the objective left it; train() puts it in eval mode at the end."""
    s, dist, device = run.settings, run.dist, run.device
    key = epoch_key(run.seed, epoch)
    gen = torch.Generator().manual_seed(key)
    torch.manual_seed(key ^ LOCAL_SALT)
    start, lr_now = time.perf_counter(), float(run.optimizer.param_groups[0]["lr"])
    run.model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen, scored = 0, 0
    part = slice(dist.rank, None, dist.world)
    dtype, augment = model_dtype(run.model), AUGMENTATIONS.get(s.augment)
    show = run.progress and sys.stderr.isatty() and dist.main
    bar = tqdm(total=run.steps, desc=f"{run.label} epoch {epoch}/{s.epochs}".strip(), disable=not show, leave=False)
    for idx in _batches(len(run.x_train), s.batch_size, gen, dist.world):
        # every rank draws the same global batch and augmentation, then takes its share of it
        xb = augment(run.x_train[idx].to(device, dtype, non_blocking=True), gen, s.pad)
        yb = run.y_train[idx].to(device, non_blocking=True)
        if dist.active:
            xb, yb, idx = xb[part], yb[part], idx[part]
        if run.memory_format is not None:
            xb = xb.contiguous(memory_format=run.memory_format)
        with autocast(device, s.precision):
            loss, logits = run.objective.loss(run.net, xb, yb, idx, epoch)
        run.optimizer.zero_grad(set_to_none=True)
        if run.scaler is not None:
            run.scaler.scale(loss).backward()
            run.scaler.step(run.optimizer)
            run.scaler.update()
        else:
            loss.backward()
            run.optimizer.step()
        if run.scheduler is not None:
            run.scheduler.step()
        loss_sum += loss.detach() * len(yb)
        if logits is not None:
            correct += (logits.argmax(1) == yb).sum()
            scored += len(yb)
        seen += len(yb)
        bar.update(1)
    bar.close()
    total_loss, total_correct = float(loss_sum), int(correct)
    if dist.active:
        total_loss, total_correct = dist.total(total_loss), int(dist.total(total_correct))
        seen, scored = int(dist.total(seen)), int(dist.total(scored))
    mean_loss = total_loss / seen
    if not math.isfinite(mean_loss):
        raise ConfigError(f"training diverged (loss {mean_loss}) in epoch {epoch}; lower lr (got {s.lr})")
    record: dict[str, Any] = {"epoch": epoch, "loss": mean_loss}
    if scored:
        record["train_accuracy"] = total_correct / scored
    if run.x_val is not None and run.y_val is not None:
        record["val_accuracy"] = evaluate_accuracy(run.model, run.x_val, run.y_val, device=device)
    stop = bool(run.objective.epoch_end(epoch, record))
    record.update(lr=lr_now, time_s=time.perf_counter() - start)
    run.history.append(record)
    train_acc = f" train {100 * record['train_accuracy']:.2f}%" if "train_accuracy" in record else ""
    val = f" val {100 * record['val_accuracy']:.2f}%" if "val_accuracy" in record else ""
    run.say(f"epoch {epoch}/{s.epochs} loss {mean_loss:.4f}{train_acc}{val} lr {lr_now:.4g} ({record['time_s']:.1f}s)")
    return record, stop


def save_epoch(run: Run, epoch: int, done: bool) -> None:
    """After an epoch (rank 0 only): the training state first, then the network's weights, so a weights file
    without a newer state beside it is never taken as finished."""
    if run.checkpoint is None or run.network is None or not run.dist.main:
        return
    write_state(state_path(run.checkpoint), model=run.model, optimizer=run.optimizer, scheduler=run.scheduler,
                scaler=run.scaler, objective=run.objective, epoch=epoch, done=done, history=run.history,
                settings=run.record)
    save_model(run.network, run.checkpoint, meta={"epoch": epoch, "history": run.history})


def train(model: nn.Module, x_train: Tensor, y_train: Tensor, settings: TrainSettings | None = None, *,
          objective: Objective | None = None, seed: int = 0, device: str | torch.device = "cpu",
          x_val: Tensor | None = None, y_val: Tensor | None = None, checkpoint: str | Path | None = None,
          resume: bool = False, label: str = "", progress: bool = False) -> list[dict[str, Any]]:
    """Train a classifier (by default with cross-entropy); moves ``model`` to ``device``, leaves it in eval mode.

    Args:
        model: images in [0, 1] -> logits; with ``checkpoint``, a ``Normalized`` from build_model or a
            module around exactly one (filters in front: that network's weights are saved).
        x_train, y_train: float (N, C, H, W) images in [0, 1] and integer labels (N,).
        settings: a TrainSettings (epochs, batch_size, optimizer, lr, momentum, weight_decay, schedule,
            augment, pad, precision, channels_last, compile); None is TrainSettings(), the CLI's defaults.
        objective: what each batch minimizes (sparring.training.Objective; default CrossEntropy()).
        seed: seeds shuffling, augmentation and dropout (derived per epoch).
        x_val, y_val: optional validation split, evaluated after each epoch.
        checkpoint: a path stem; after each epoch (rank 0 under torchrun) the training state goes to
            ``<stem>.train-state.pt`` (sparring.training.checkpoint: model, optimizer, schedule, fp16 scaler,
            epoch, history, the objective's state, the settings; written atomically and kept), then the
            network's weights to ``save_model(network, checkpoint, meta={"epoch", "history"})``.
        resume: continue from ``<stem>.train-state.pt`` of ``checkpoint`` when it exists (else train from
            scratch, and say so): every process restores it and training goes on from the next epoch, ending
            with the weights of an uninterrupted run; a finished run returns its saved history without
            training. The settings, seed, number of training images, number of processes and the objective's
            name must match the saved run (else a ConfigError naming the first that differs). The file is
            loaded with weights_only=True (DataError if refused).
        label: what is trained ("teacher"), put first on its log lines.
        progress: a progress bar per epoch on a terminal (rank 0).
    Returns:
        One dict per epoch: epoch, loss, train_accuracy (when the objective gives logits), [val_accuracy],
        what the objective adds, lr (at epoch start), time_s.

    Example:
        >>> history = train(build_model("digits-cnn"), x, y, TrainSettings(epochs=5, lr=1e-3))
    """
    run = prepare(model, x_train, y_train, TrainSettings() if settings is None else settings, objective=objective,
                  seed=seed, device=device, x_val=x_val, y_val=y_val, checkpoint=checkpoint, resume=resume,
                  label=label, progress=progress)
    if run.finished:
        return run.history
    fork_devices = [run.device] if run.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=fork_devices):
            for epoch in range(run.first, run.settings.epochs + 1):
                _, stop = run_epoch(run, epoch)
                save_epoch(run, epoch, done=stop or epoch == run.settings.epochs)
                if stop:
                    break
    finally:
        model.eval()
        if run.memory_format is not None:  # saved weights must be contiguous (safetensors)
            cast(Any, model).to(memory_format=torch.contiguous_format)
    return run.history


def evaluate_accuracy(model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 512,
                      device: str | torch.device = "cpu") -> float:
    """Top-1 accuracy in [0, 1], in eval mode under inference_mode; restores the model's mode.

    The model must already be on ``device``; batches are moved there.

    Example:
        >>> evaluate_accuracy(model, x_test, y_test)  # doctest: +SKIP
        0.9733
    """
    x, y = check_data(x, y, "evaluation")
    batch_size = check_number(batch_size, "batch_size", integer=True, low=1)
    dev = check_device(device)
    param = next(model.parameters(), None)
    if param is not None and (param.device.type != dev.type or
                              (dev.index is not None and param.device.index != dev.index)):
        raise InputError(f"expected the model on {dev}, got it on {param.device}; move it with model.to(...)")
    was_training, dtype = model.training, model_dtype(model)
    model.eval()
    correct = 0
    try:
        with torch.inference_mode():
            for i in range(0, len(x), batch_size):
                logits = model(x[i : i + batch_size].to(dev, dtype))
                correct += int((logits.argmax(1) == y[i : i + batch_size].to(dev)).sum())
    finally:
        model.train(was_training)
    return correct / len(x)
