"""MagNet-style input reconstruction: a denoising autoencoder as reformer and as detector.

Meng & Chen 2017, "MagNet: a Two-Pronged Defense against Adversarial Examples", arXiv:1705.09064.
An autoencoder trained on clean data only (MSE, Gaussian input noise) learns the data manifold.
The reformer feeds ae(x) to the classifier (``Defended(Reformer(ae), model)``); the detector
flags inputs whose reconstruction error mean |x - ae(x)|^p is above a clean-data threshold.
Both are differentiable: an adaptive attack differentiates straight through them, which is how
Carlini & Wagner broke MagNet ("MagNet and efficient defenses ... are not robust", arXiv:1711.08478).
The autoencoder trains in the one loop, ``sparring.train.train``, through its batch_loss hook.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from ..rng import SampleGenerators, normal
from ..train import _dtype, _positive, train
from .detection import _Detector, _images
from .registry import DEFENSES

__all__ = ["ReconstructionDetector", "Reformer", "build_autoencoder", "train_autoencoder"]

_MAGNET = "Meng & Chen 2017, MagNet: a Two-Pronged Defense against Adversarial Examples, arXiv:1705.09064"


def _shape(shape: Any) -> tuple[int, int, int]:
    ok = isinstance(shape, (tuple, list, torch.Size)) and len(shape) == 3
    if not ok or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape):
        raise InputError(f"expected shape as three positive integers (C, H, W), got {shape!r}")
    return int(shape[0]), int(shape[1]), int(shape[2])


def _reconstruct(autoencoder: nn.Module, x: Any) -> Tensor:
    """ae(x) after checking x is a float (B, C, H, W) batch and ae keeps its shape."""
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise InputError(f"expected images as a float (B, C, H, W) tensor, got {got}")
    try:
        out = autoencoder(x)
    except RuntimeError as exc:
        raise InputError(f"expected images the autoencoder accepts, got shape {tuple(x.shape)}: "
                         f"{str(exc).splitlines()[0]}") from None  # fmt: skip
    if out.shape != x.shape:
        raise InputError(f"expected the autoencoder to keep the shape {tuple(x.shape)}, got {tuple(out.shape)}")
    return out


def build_autoencoder(shape: tuple[int, int, int], *, width: int = 16, pool: bool | None = None) -> nn.Sequential:
    """A small convolutional autoencoder (B, C, H, W) -> (B, C, H, W) with outputs in [0, 1].

    Meng & Chen 2017 (MagNet), arXiv:1705.09064: 3x3 stride-1 convolutions with padding,
    conv-ReLU-[avgpool 2]-conv-ReLU-[upsample 2]-conv-sigmoid; the pooling pair (MagNet's MNIST
    detector I) is on by default when H and W are even and >= 16 (28x28 MNIST, 32x32 CIFAR),
    off for 8x8 digits. Args: shape, (C, H, W) of the images; width, hidden channels (>= 1);
    pool, force the avg-pool/upsample pair on or off (None: automatic). Weights: torch's
    default init under the caller's RNG (seed it, or use train_autoencoder's seed).
        >>> ae = build_autoencoder((1, 28, 28), width=16)
        >>> ae(torch.rand(4, 1, 28, 28)).shape  # torch.Size([4, 1, 28, 28])
    """
    c, h, w = _shape(shape)
    width = _positive(width, "width")
    if pool is None:
        pool = h % 2 == 0 and w % 2 == 0 and min(h, w) >= 16
    elif not isinstance(pool, bool):
        raise InputError(f"expected pool to be True, False or None, got {pool!r}")
    elif pool and (h % 2 or w % 2):
        raise InputError(f"expected even H and W with pool=True, got {h}x{w}")
    down = [nn.AvgPool2d(2)] if pool else []
    up = [nn.Upsample(scale_factor=2, mode="nearest")] if pool else []
    return nn.Sequential(nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), *down,
                         nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), *up,
                         nn.Conv2d(width, c, 3, padding=1), nn.Sigmoid())  # fmt: skip


class _Denoising(nn.Module):
    """What train() sees: per-sample clean reconstruction MSE as (B, 1) 'logits' (labels are zeros)."""

    def __init__(self, autoencoder: nn.Module) -> None:
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, x: Tensor) -> Tensor:
        return (self.autoencoder(x) - x).square().flatten(1).mean(1, keepdim=True)


@DEFENSES.register("autoencoder", kind="preprocess", differentiable=True, random=False, paper=_MAGNET,
                   params={"noise": 0.1}, description="MagNet reformer: deploy Defended(Reformer(ae), model)")
def train_autoencoder(
    x_train: Tensor, *, autoencoder: nn.Module | None = None, width: int = 16, noise: float = 0.1, epochs: int = 20,
    batch_size: int = 128, lr: float = 1e-3, x_val: Tensor | None = None, seed: int = 0,
    device: str | torch.device = "cpu", progress: bool = False, log: Callable[[str], Any] | None = None,
) -> tuple[nn.Module, list[dict[str, Any]]]:
    """Train a denoising autoencoder on clean images only: MSE(ae(clip(x + noise * N(0, 1))), x).

    Meng & Chen 2017 (MagNet), arXiv:1705.09064. Runs in sparring.train.train (Adam, cosine
    schedule, no weight decay) through batch_loss; labels are unused (zeros). The noise of sample
    i in epoch e comes from SampleGenerators(seed, [(e - 1) * N + i]), so it does not depend on
    batch_size or batch order; seed also seeds the weights (built under a forked RNG).
    Args:
        x_train: float (N, C, H, W) clean images in [0, 1], N >= 2.
        autoencoder: a module keeping the image shape (default: build_autoencoder(shape, width)).
        noise: standard deviation of the Gaussian input noise (>= 0; 0 = plain autoencoder).
        epochs, batch_size, lr, seed, device, progress: as in train().
        x_val: optional clean images; each epoch's record then has val_mse (no noise).
        log: called with one line per epoch.
    Returns:
        (autoencoder in eval mode on device, history): one record per epoch with epoch, loss
        (the mean denoising MSE of the epoch), [val_mse], lr, time_s.

    Example:
        >>> ae, history = train_autoencoder(x_train, noise=0.1, epochs=20, seed=0)
        >>> defended = Defended(Reformer(ae), model)
    """
    x_train = _images(x_train, "x_train")
    if x_val is not None and (_images(x_val, "x_val").shape[1:] != x_train.shape[1:]):
        raise InputError(f"expected x_val images of shape {tuple(x_train.shape[1:])}, got {tuple(x_val.shape[1:])}")
    ok = isinstance(noise, (int, float)) and not isinstance(noise, bool) and math.isfinite(noise)
    if not ok or noise < 0:
        raise InputError(f"expected noise to be a finite number >= 0, got {noise!r}")
    _positive(seed, "seed", int, zero_ok=True)
    if autoencoder is None:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            autoencoder = build_autoencoder(tuple(x_train.shape[1:]), width=width)  # type: ignore[arg-type]
    elif not isinstance(autoencoder, nn.Module):
        raise InputError(f"expected autoencoder to be an nn.Module or None, got {type(autoencoder).__name__}")
    ae, dev = autoencoder, next(autoencoder.parameters(), x_train).device
    with torch.no_grad():
        _reconstruct(ae, x_train[:2].to(dev))
    n, sigma = len(x_train), float(noise)

    def batch_loss(model: nn.Module, x: Tensor, y: Tensor, index: Tensor, epoch: int) -> tuple[Tensor, Tensor]:
        noisy = x
        if sigma > 0:
            gen = SampleGenerators(seed, (index + (epoch - 1) * n).tolist())
            noisy = (x + sigma * normal(gen, x)).clamp(0, 1)
        loss = F.mse_loss(model.autoencoder(noisy), x)  # type: ignore[operator]
        return loss, torch.zeros(len(x), 1, device=x.device, dtype=x.dtype)

    def epoch_end(epoch: int, record: dict[str, Any]) -> bool:
        if x_val is not None:  # train() puts ae back in train mode at the next epoch
            ae.eval()
            with torch.no_grad():
                sse = sum(float((ae(b) - b).square().sum()) for b in (v.to(device, _dtype(ae)) for v in x_val.split(512)))
            record["val_mse"] = sse / x_val.numel()
        if log is not None:
            val = f" val_mse {record['val_mse']:.5f}" if "val_mse" in record else ""
            log(f"autoencoder epoch {epoch}/{epochs} loss {record['loss']:.5f}{val}")
        return False

    history = train(_Denoising(ae), x_train, torch.zeros(n, dtype=torch.long), epochs=epochs,
                    batch_size=batch_size, optimizer="adam", lr=lr, weight_decay=0.0, seed=seed, device=device,
                    progress=progress, batch_loss=batch_loss, epoch_end=epoch_end)  # fmt: skip
    for record in history:
        record.pop("train_accuracy", None)  # the dummy labels make it meaningless
    return ae.eval(), history


class Reformer(nn.Module):
    """MagNet's reformer: forward(x) = autoencoder(x), the input moved onto the learned manifold.

    Meng & Chen 2017, arXiv:1705.09064. Differentiable and deterministic (differentiable = True,
    random = False; surrogate() is itself, so bpda() leaves it unchanged): an adaptive attack
    differentiates through it (Carlini & Wagner 2017, arXiv:1711.08478).
    Args: autoencoder, a module keeping the image shape (e.g. from train_autoencoder).
        >>> defended = Defended(Reformer(ae), model)
        >>> x_adv = pgd(defended.for_attack(), x, y, threat=ThreatModel(Norm.LINF, 0.2))
    """

    differentiable = True
    random = False

    def __init__(self, autoencoder: nn.Module) -> None:
        super().__init__()
        if not isinstance(autoencoder, nn.Module):
            raise InputError(f"expected autoencoder to be an nn.Module, got {type(autoencoder).__name__}")
        self.autoencoder = autoencoder

    def forward(self, x: Tensor) -> Tensor:
        return _reconstruct(self.autoencoder, x)

    def surrogate(self) -> nn.Module:
        """Itself: the reformer is differentiable (BPDA, arXiv:1802.00420, needs no approximation)."""
        return self


@DEFENSES.register("reconstruction-detector", kind="detector", differentiable=True, random=False, paper=_MAGNET,
                   params={"p": 1}, description="flags inputs with mean |x - ae(x)|^p above a clean threshold")
class ReconstructionDetector(_Detector):
    """MagNet's reconstruction-error detector: score(x) = mean over pixels of |x - ae(x)|^p, (B,).

    Meng & Chen 2017, arXiv:1705.09064 (p = 1 for MNIST, p = 2 also used). fit_threshold(x_clean,
    fpr) sets the threshold at the clean (1 - fpr) quantile; detect(x) flags score > threshold.
    Differentiable (differentiable = True, random = False): evaluate it with DetectorGuard, which
    attacks classifier and detector together (Carlini & Wagner 2017, arXiv:1711.08478).
    Args: autoencoder, a module keeping the image shape; p, the error exponent (>= 1);
        threshold, optional.
        >>> det = ReconstructionDetector(ae, p=1); det.fit_threshold(x_clean, fpr=0.05)
        >>> flagged = det.detect(x_adv)
    """

    def __init__(self, autoencoder: nn.Module, *, p: float = 1, threshold: float | None = None) -> None:
        super().__init__(threshold)
        if not isinstance(autoencoder, nn.Module):
            raise InputError(f"expected autoencoder to be an nn.Module, got {type(autoencoder).__name__}")
        ok = isinstance(p, (int, float)) and not isinstance(p, bool) and math.isfinite(p) and p >= 1
        if not ok:
            raise InputError(f"expected p to be a finite number >= 1, got {p!r}")
        self.autoencoder, self.p = autoencoder, float(p)

    def forward(self, x: Tensor) -> Tensor:
        return (x - _reconstruct(self.autoencoder, x)).abs().pow(self.p).flatten(1).mean(1)

    def fit_threshold(self, x_clean: Tensor, fpr: float = 0.05, *, batch_size: int = 512) -> float:
        """Set and return the threshold flagging at most a fraction fpr in (0, 1) of x_clean."""
        ok = isinstance(fpr, (int, float)) and not isinstance(fpr, bool) and 0 < fpr < 1
        if not ok:
            raise InputError(f"expected fpr to be a number in (0, 1), got {fpr!r}")
        return super().fit_threshold(x_clean, fpr, batch_size=batch_size)

    def extra_repr(self) -> str:
        return f"p={self.p}, threshold={self.threshold}"
