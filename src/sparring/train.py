"""One training loop: SGD/Adam, LR schedules, batch augmentation, progress, checkpoints, resume.

Randomness is explicit: shuffling and augmentation draw from a torch.Generator seeded from
(seed, epoch); layers that use the global RNG (Dropout) run inside ``torch.random.fork_rng``
reseeded from (seed, epoch), so the caller's global RNG state is untouched, a run is
reproducible from its seed, and a run resumed after epoch k (sparring.checkpoint) ends with the
weights of an uninterrupted one.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .augment import AUGMENTATIONS, augment_batch
from .checkpoint import read_state, restore_state, state_path, write_state
from .distributed import current
from .errors import ConfigError, InputError
from .optim import OPTIMIZERS, SCHEDULES
from .precision import autocast, current_options

__all__ = ["AUGMENTATIONS", "OPTIMIZERS", "SCHEDULES", "augment_batch", "evaluate_accuracy", "model_device", "train"]

_MIX = 0x9E3779B97F4A7C15

def _check_data(x: Any, y: Any, what: str) -> tuple[Tensor, Tensor]:
    """Images (N, C, H, W) float in [0, 1] and integer labels (N,) >= 0, else InputError."""
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    if x.dim() != 4 or not x.is_floating_point():
        raise InputError(f"expected {what} images as a float (N, C, H, W) tensor, got {x.dtype} {tuple(x.shape)}")
    if y.dim() != 1 or y.is_floating_point() or y.dtype == torch.bool:
        raise InputError(f"expected {what} labels as an integer (N,) tensor, got {y.dtype} {tuple(y.shape)}")
    if len(x) != len(y) or len(x) == 0:
        raise InputError(f"expected as many {what} labels as images (>= 1), got {len(y)} labels for {len(x)} images")
    lo, hi = float(x.min()), float(x.max())
    if not (0.0 <= lo and hi <= 1.0):
        raise InputError(f"expected {what} images in [0, 1] (finite), got values in [{lo:.4g}, {hi:.4g}]")
    if int(y.min()) < 0:
        raise InputError(f"expected {what} labels >= 0, got {int(y.min())}")
    return x, y.long()


def _positive(value: Any, what: str, kind: type = int, zero_ok: bool = False) -> Any:
    ok = not isinstance(value, bool) and isinstance(value, (int, float) if kind is float else int)
    if not ok or not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        raise InputError(f"expected {what} to be a {'finite number' if kind is float else 'integer'} "
                         f"{'>= 0' if zero_ok else '> 0'}, got {value!r}")  # fmt: skip
    return value


def _device(device: str | torch.device) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"expected a device such as cpu, cuda or cuda:0, got {device!r}") from None


def model_device(model: nn.Module) -> torch.device:
    """Where the model's first parameter (else buffer) lives; the CPU for a model with neither."""
    tensor = next(model.parameters(), None)
    tensor = tensor if tensor is not None else next(model.buffers(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def _dtype(model: nn.Module) -> torch.dtype:
    """Floating dtype of the model's first parameter (float32 for a parameter-free model)."""
    param = next(model.parameters(), None)
    return param.dtype if param is not None and param.is_floating_point() else torch.float32


def _ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """The model in DistributedDataParallel (one GPU per process on CUDA); buffers are not broadcast at each
    forward, so the attacks of adversarial training may run any number of forwards on one rank."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index or 0] if device.type == "cuda" else None,
                                   broadcast_buffers=False)


def _network(model: nn.Module) -> nn.Module:
    """The Normalized (registered arch) that ``checkpoint`` saves: the model, or the one inside it."""
    from .models import MODELS, Normalized

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


def train(
    model: nn.Module,
    x_train: Tensor,
    y_train: Tensor,
    *,
    x_val: Tensor | None = None,
    y_val: Tensor | None = None,
    epochs: int = 10,
    batch_size: int = 128,
    optimizer: str = "sgd",
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    schedule: str = "cosine",
    augment: str = "none",
    pad: int = 4,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    checkpoint: str | Path | None = None,
    log: Callable[[str], Any] | None = None,
    batch_loss: Callable[[nn.Module, Tensor, Tensor, Tensor, int], tuple[Tensor, Tensor]] | None = None,
    epoch_end: Callable[[int, dict[str, Any]], bool] | None = None,
    resume: bool = False,
    hook_state: Any = None,
) -> list[dict[str, Any]]:
    """Train a classifier with cross-entropy; moves ``model`` to ``device``, leaves it in eval mode.

    Args:
        model: images in [0, 1] -> logits; with ``checkpoint``, a ``Normalized`` from build_model or a
            module around exactly one (filters in front: that network's weights are saved).
        x_train, y_train: float (N, C, H, W) images in [0, 1] and integer labels (N,).
        x_val, y_val: optional validation split, evaluated after each epoch.
        optimizer / schedule / augment: names in OPTIMIZERS / SCHEDULES / AUGMENTATIONS.
        seed: seeds shuffling, augmentation and dropout (derived per epoch).
        checkpoint: a path stem; after each epoch (rank 0 under torchrun) the training state goes to
            ``<stem>.train-state.pt`` (sparring.checkpoint: model, optimizer, schedule, fp16 scaler, epoch,
            history, hook_state, settings; written atomically and kept), then the network's weights to
            ``save_model(network, checkpoint, meta={"epoch", "history"})``.
        resume: continue from ``<stem>.train-state.pt`` of ``checkpoint`` when it exists (else train from
            scratch, and say so to ``log``): every process restores it and training goes on from the
            next epoch, ending with the weights of an uninterrupted run; a finished run returns its
            saved history without training. Epochs, batch_size, optimizer, lr, momentum, weight_decay,
            schedule, augment, pad, seed, the number of training images, the number of processes,
            precision and the batch_loss hook must match the saved run (else a ConfigError naming the
            first that differs). The file is loaded with weights_only=True (DataError if refused).
        log: called with a one-line summary after each epoch.
        batch_loss: ``batch_loss(model, x, y, index, epoch) -> (loss, logits)`` replaces the
            cross-entropy on each (augmented) batch, model in train mode; index holds the batch's
            sample indices (for per-sample randomness); logits, aligned with y, give train_accuracy.
        epoch_end: ``epoch_end(epoch, record) -> stop`` after each epoch's metrics; it may add keys
            to record or change the model; a true return ends training after this epoch.
        hook_state: the hooks' state across epochs, an object with ``state_dict() -> dict`` (tensors and
            plain values) and ``load_state_dict(state)``; kept in the training state and restored on resume.
    Returns:
        One dict per epoch: epoch, loss, train_accuracy, [val_accuracy], lr (at epoch start), time_s.

    Example:
        >>> history = train(build_model("digits-cnn"), x, y, epochs=5, optimizer="adam", lr=1e-3)
    """
    x_train, y_train = _check_data(x_train, y_train, "training")
    if (x_val is None) != (y_val is None):
        raise InputError("expected x_val and y_val both given or both None")
    if x_val is not None:
        x_val, y_val = _check_data(x_val, y_val, "validation")
    if len(x_train) < 2:
        raise InputError(f"expected at least 2 training images, got {len(x_train)}")
    epochs, batch_size = _positive(epochs, "epochs"), _positive(batch_size, "batch_size")
    lr, weight_decay = _positive(lr, "lr", float), _positive(weight_decay, "weight_decay", float, True)
    if _positive(momentum, "momentum", float, True) >= 1:
        raise InputError(f"expected 0 <= momentum < 1, got {momentum}")
    make_opt, make_sched = OPTIMIZERS.get(optimizer), SCHEDULES.get(schedule)
    augment_batch(x_train[:2], augment, generator=torch.Generator(), pad=pad)  # validates name and pad
    network = _network(model) if checkpoint is not None else None
    if not isinstance(resume, bool):
        raise InputError(f"expected resume to be True or False, got {resume!r}")
    if resume and checkpoint is None:
        raise ConfigError("resume=True needs checkpoint=, the path stem whose .train-state.pt it continues from")
    if hook_state is not None and not all(callable(getattr(hook_state, k, None))
                                          for k in ("state_dict", "load_state_dict")):  # fmt: skip
        raise InputError("expected hook_state to have state_dict() and load_state_dict(), got "
                         f"{type(hook_state).__name__}")
    for hook, what in ((batch_loss, "batch_loss"), (epoch_end, "epoch_end")):
        if hook is not None and not callable(hook):
            raise InputError(f"expected {what} to be callable or None, got {type(hook).__name__}")
    _positive(seed, "seed", int, zero_ok=True)
    device = _device(device)
    model.to(device)
    model.eval()
    dtype = _dtype(model)
    try:
        with torch.inference_mode():
            out = model(x_train[:2].to(device, dtype))
    except RuntimeError as exc:
        raise InputError(f"model does not accept images of shape {tuple(x_train.shape[1:])}: "
                         f"{str(exc).splitlines()[0]}") from None  # fmt: skip
    if out.dim() != 2 or int(y_train.max()) >= out.shape[1]:
        raise InputError(f"expected labels below the model's {out.shape[-1]} outputs, got max {int(y_train.max())}")
    dist = current()
    if dist.active and batch_size < 2 * dist.world:
        raise InputError(f"expected a batch size of at least 2 per process ({2 * dist.world}), got {batch_size}")
    n = len(x_train)
    steps = n // batch_size + (1 if n % batch_size >= 2 * dist.world else 0)
    opt = make_opt(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = make_sched(opt, lr=lr, epochs=epochs, steps_per_epoch=steps)
    history: list[dict[str, Any]] = []
    show = progress and sys.stderr.isatty() and dist.main
    opts = current_options()  # mixed precision, channels_last, torch.compile (sparring.precision)
    scaler = torch.amp.GradScaler(device.type) if opts.precision == "fp16" else None
    settings = {"epochs": epochs, "batch_size": batch_size, "optimizer": optimizer, "lr": lr, "momentum": momentum,
                "weight_decay": weight_decay, "schedule": schedule, "augment": augment, "pad": pad, "seed": seed,
                "train_images": n, "processes": dist.world, "precision": opts.precision,
                "batch_loss": None if batch_loss is None else getattr(batch_loss, "__qualname__",
                                                                      type(batch_loss).__name__),
                "hook_state": None if hook_state is None else type(hook_state).__name__}  # fmt: skip
    state_file, first = (state_path(checkpoint) if checkpoint is not None else None), 1
    if resume and state_file is not None:
        saved = read_state(state_file, settings, dist)  # every rank reads rank 0's file
        say = log if log is not None and dist.main else (lambda line: None)
        if saved is None:
            say(f"no training state at {state_file}: training from scratch")
        else:
            restore_state(saved, state_file, model=model, optimizer=opt, scheduler=sched, scaler=scaler,
                          hook_state=hook_state)
            history, first = list(saved["history"]), int(saved["epoch"]) + 1
            say(f"resumed from {state_file} after epoch {saved['epoch']}/{epochs}"
                + (": training had finished" if saved["done"] else ""))
            if saved["done"]:
                model.eval()
                return history
    fmt = torch.channels_last if opts.channels_last and out.dim() == 2 and x_train.dim() == 4 else None
    if fmt is not None:
        model.to(memory_format=fmt)
    net = _ddp(model, device) if dist.active else model  # under torchrun: gradients averaged over the ranks
    if opts.compile:
        net = torch.compile(net)
    part = slice(dist.rank, None, dist.world)
    fork_devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=fork_devices):
            for epoch in range(first, epochs + 1):
                key = (int(seed) * _MIX + epoch * 0xBF58476D1CE4E5B9) % (2**63 - 1)
                gen = torch.Generator().manual_seed(key)
                torch.manual_seed(key ^ 0x5DEECE66D)
                start, lr_now = time.perf_counter(), float(opt.param_groups[0]["lr"])
                model.train()
                loss_sum = torch.zeros((), device=device)
                correct = torch.zeros((), dtype=torch.long, device=device)
                seen = 0
                bar = tqdm(total=steps, desc=f"epoch {epoch}/{epochs}", disable=not show, leave=False)
                for idx in _batches(n, batch_size, gen, dist.world):
                    # every rank draws the same global batch and augmentation, then takes its share of it
                    xb = AUGMENTATIONS.get(augment)(x_train[idx].to(device, dtype, non_blocking=True), gen, pad)
                    yb = y_train[idx].to(device, non_blocking=True)
                    if dist.active:
                        xb, yb, idx = xb[part], yb[part], idx[part]
                    if fmt is not None:
                        xb = xb.contiguous(memory_format=fmt)
                    with autocast(device, opts.precision):
                        if batch_loss is None:
                            logits = net(xb)
                            loss = F.cross_entropy(logits.float(), yb)
                        else:
                            loss, logits = batch_loss(net, xb, yb, idx, epoch)
                    opt.zero_grad(set_to_none=True)
                    if scaler is not None:
                        scaler.scale(loss).backward()
                        scaler.step(opt)
                        scaler.update()
                    else:
                        loss.backward()
                        opt.step()
                    if sched is not None:
                        sched.step()
                    loss_sum += loss.detach() * len(yb)
                    correct += (logits.argmax(1) == yb).sum()
                    seen += len(yb)
                    bar.update(1)
                bar.close()
                if dist.active:
                    loss_sum, correct = dist.total(float(loss_sum)), int(dist.total(int(correct)))
                    seen = int(dist.total(seen))
                mean_loss = float(loss_sum) / seen
                if not math.isfinite(mean_loss):
                    raise ConfigError(f"training diverged (loss {mean_loss}) in epoch {epoch}; lower lr (got {lr})")
                record: dict[str, Any] = {"epoch": epoch, "loss": mean_loss,
                                          "train_accuracy": int(correct) / seen}  # fmt: skip
                if x_val is not None and y_val is not None:
                    record["val_accuracy"] = evaluate_accuracy(model, x_val, y_val, device=device)
                stop = bool(epoch_end(epoch, record)) if epoch_end is not None else False
                record.update(lr=lr_now, time_s=time.perf_counter() - start)
                history.append(record)
                if log is not None and dist.main:
                    val = f" val {100 * record['val_accuracy']:.2f}%" if "val_accuracy" in record else ""
                    log(f"epoch {epoch}/{epochs} loss {mean_loss:.4f} train {100 * record['train_accuracy']:.2f}%"
                        f"{val} lr {lr_now:.4g} ({record['time_s']:.1f}s)")  # fmt: skip
                if checkpoint is not None and state_file is not None and dist.main:
                    from .models import save_model

                    # the state first: a weights file without a newer state is never taken as finished
                    write_state(state_file, model=model, optimizer=opt, scheduler=sched, scaler=scaler,
                                hook_state=hook_state, epoch=epoch, done=stop or epoch == epochs, history=history,
                                settings=settings)
                    save_model(network, checkpoint, meta={"epoch": epoch, "history": history})  # type: ignore[arg-type]
                if stop:
                    break
    finally:
        model.eval()
        if fmt is not None:  # saved weights must be contiguous (safetensors); inference needs no format
            model.to(memory_format=torch.contiguous_format)
    return history


def evaluate_accuracy(
    model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 512, device: str | torch.device = "cpu"
) -> float:
    """Top-1 accuracy in [0, 1], in eval mode under inference_mode; restores the model's mode.

    The model must already be on ``device``; batches are moved there.

    Example:
        >>> evaluate_accuracy(model, x_test, y_test)  # doctest: +SKIP
        0.9733
    """
    x, y = _check_data(x, y, "evaluation")
    batch_size = _positive(batch_size, "batch_size")
    device = _device(device)
    param = next(model.parameters(), None)
    if param is not None and (param.device.type != device.type or
                              (device.index is not None and param.device.index != device.index)):  # fmt: skip
        raise InputError(f"expected the model on {device}, got it on {param.device}; move it with model.to(...)")
    was_training, dtype = model.training, _dtype(model)
    model.eval()
    correct = 0
    try:
        with torch.inference_mode():
            for i in range(0, len(x), batch_size):
                logits = model(x[i : i + batch_size].to(device, dtype))
                correct += int((logits.argmax(1) == y[i : i + batch_size].to(device)).sum())
    finally:
        model.train(was_training)
    return correct / len(x)
