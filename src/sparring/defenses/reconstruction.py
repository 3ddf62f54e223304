"""MagNet-style input reconstruction: a denoising autoencoder as reformer and as detector.

Meng & Chen 2017, "MagNet: a Two-Pronged Defense against Adversarial Examples", arXiv:1705.09064.
An autoencoder trained on clean data only (MSE, Gaussian input noise) learns the data manifold.
The reformer feeds ae(x) to the classifier (``Defended(Reformer(ae), model)``); the detector
flags inputs whose reconstruction error mean |x - ae(x)|^p is above a clean-data threshold.
Both are differentiable: an adaptive attack differentiates straight through them, which is how
Carlini & Wagner broke MagNet ("MagNet and efficient defenses ... are not robust", arXiv:1711.08478).
The autoencoder trains in the one loop, ``sparring.training.train``, with the Denoising objective (its loss
has no class logits, so its records have no train accuracy).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import TrainSettings
from ..errors import DataError, InputError
from ..rng import SampleGenerators, normal
from ..training import Objective, train
from ..util import check_images, check_number, model_device, model_dtype
from .base import Context, DefenseSpec, Fitted, Param, register
from .detection import Detector

__all__ = ["AUTOENCODER_TRAINING", "Denoising", "ReconstructionDetector", "Reformer", "autoencoder_parts",
           "build_autoencoder", "train_autoencoder"]

log = logging.getLogger(__name__.rpartition(".")[0])

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
    width = check_number(width, "width", integer=True, low=1)
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


class Denoising(Objective):
    """The denoising autoencoder's objective: MSE(ae(clip(x + noise * N(0, 1))), x), without class logits.
    Sample i's noise in epoch e (of n training images) comes from SampleGenerators(seed, [(e - 1) * n + i]),
    as from the start (an autoencoder retrains the same), so it does not depend on batch_size or batch order;
    the epoch record gets val_mse (without noise) with x_val."""

    def __init__(self, autoencoder: nn.Module, noise: float, seed: int, n: int, x_val: Tensor | None) -> None:
        self.autoencoder, self.noise, self.seed, self.n, self.x_val = autoencoder, noise, seed, n, x_val

    def check(self, model: nn.Module, x: Tensor, y: Tensor) -> None:
        with torch.no_grad():
            _reconstruct(self.autoencoder, x[:2].to(model_device(self.autoencoder)))

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor, epoch: int) -> tuple[Tensor, Tensor | None]:
        noisy = x
        if self.noise > 0:
            gen = SampleGenerators(self.seed, (index + (epoch - 1) * self.n).tolist())
            noisy = (x + self.noise * normal(gen, x)).clamp(0, 1)
        return F.mse_loss(model(noisy), x), None

    def epoch_end(self, epoch: int, record: dict[str, Any]) -> bool:
        if self.x_val is not None:  # train() puts the autoencoder back in train mode at the next epoch
            ae = self.autoencoder.eval()
            device, dtype = model_device(ae), model_dtype(ae)
            with torch.no_grad():
                batches = (v.to(device, dtype) for v in self.x_val.split(512))
                sse = sum(float((ae(b) - b).square().sum()) for b in batches)
            record["val_mse"] = sse / self.x_val.numel()
        return False


#: How train_autoencoder trains by default (MagNet's setting: Adam 1e-3, 20 epochs of 128, no weight decay).
AUTOENCODER_TRAINING = TrainSettings(epochs=20, batch_size=128, optimizer="adam", lr=1e-3, weight_decay=0.0)


def train_autoencoder(
    x_train: Tensor, *, autoencoder: nn.Module | None = None, width: int = 16, noise: float = 0.1,
    settings: TrainSettings = AUTOENCODER_TRAINING, x_val: Tensor | None = None, seed: int = 0,
    device: str | torch.device = "cpu", progress: bool = False,
) -> tuple[nn.Module, list[dict[str, Any]]]:
    """Train a denoising autoencoder on clean images only: MSE(ae(clip(x + noise * N(0, 1))), x).

    Meng & Chen 2017 (MagNet), arXiv:1705.09064. Runs in sparring.training.train with the Denoising
    objective; seed also seeds the weights (built under a forked RNG). Each epoch is logged ("autoencoder
    epoch ...").
    Args:
        x_train: float (N, C, H, W) clean images in [0, 1], N >= 2.
        autoencoder: a module keeping the image shape (default: build_autoencoder(shape, width)).
        noise: standard deviation of the Gaussian input noise (>= 0; 0 = plain autoencoder).
        settings: the TrainSettings (default AUTOENCODER_TRAINING); seed, device, progress: as in train().
        x_val: optional clean images; each epoch's record then has val_mse (no noise).
    Returns:
        (autoencoder in eval mode on device, history): one record per epoch with epoch, loss
        (the mean denoising MSE of the epoch), [val_mse], lr, time_s.

    Example:
        >>> ae, history = train_autoencoder(x_train, noise=0.1, settings=AUTOENCODER_TRAINING, seed=0)
        >>> defended = Defended(Reformer(ae), model)
    """
    x_train = check_images(x_train, "x_train")
    if x_val is not None and (check_images(x_val, "x_val").shape[1:] != x_train.shape[1:]):
        raise InputError(f"expected x_val images of shape {tuple(x_train.shape[1:])}, got {tuple(x_val.shape[1:])}")
    sigma = float(check_number(noise, "noise", low=0))
    check_number(seed, "seed", integer=True, low=0)
    if autoencoder is None:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            autoencoder = build_autoencoder(_shape(tuple(x_train.shape[1:])), width=width)
    elif not isinstance(autoencoder, nn.Module):
        raise InputError(f"expected autoencoder to be an nn.Module or None, got {type(autoencoder).__name__}")
    objective = Denoising(autoencoder, sigma, seed, len(x_train), x_val)
    history = train(autoencoder, x_train, torch.zeros(len(x_train), dtype=torch.long), settings, objective=objective,
                    seed=seed, device=device, label="autoencoder", progress=progress)
    return autoencoder.eval(), history


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

    def trained_parts(self) -> dict[str, Tensor]:
        """The autoencoder's weights, "autoencoder.<key>" (what a saved model needs to rebuild it)."""
        return autoencoder_parts(self.autoencoder)


class ReconstructionDetector(Detector):
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


def autoencoder_parts(autoencoder: nn.Module) -> dict[str, Tensor]:
    """The trained autoencoder as parts: "autoencoder.<state_dict key>" -> CPU tensor."""
    return {f"autoencoder.{k}": v.detach().cpu() for k, v in autoencoder.state_dict().items()}


def _fit(context: Context, params: dict[str, Any]) -> Fitted:
    """The spec's ``fit``: the autoencoder trained on the clean training images (validated on 1000 test ones)."""
    ds = context.dataset
    x_train = context.training_data("autoencoder")[0]
    log.info(f"training the autoencoder on {len(x_train)} clean {ds.name} images")
    settings = AUTOENCODER_TRAINING.replace(epochs=int(params["epochs"]), lr=float(params["lr"]))
    ae, history = train_autoencoder(x_train, width=int(params["width"]), noise=float(params["noise"]),
                                    settings=settings, x_val=ds.x_test[:1000], seed=context.seed,
                                    device=context.device, progress=context.progress)
    return Fitted(autoencoder_parts(ae), history, {"shape": list(ds.input_shape)})


def _front(entry: Mapping[str, Any], parts: Mapping[str, Tensor]) -> nn.Module:
    """The spec's ``front``: the reformer rebuilt from the saved autoencoder and the entry's image shape."""
    state = {k[len("autoencoder."):]: v for k, v in parts.items() if k.startswith("autoencoder.")}
    if not state:
        raise DataError("defense 'autoencoder' needs its trained part (autoencoder.*), which the saved model lacks; "
                        "it is written by `sparring defend` next to the weights (<stem>.parts.safetensors)")
    shape, width = entry.get("shape"), int(entry["params"]["width"])
    if not isinstance(shape, (list, tuple)) or len(shape) != 3:
        raise DataError(f"defense 'autoencoder' needs the image shape (C, H, W) in its spec, got {shape!r}")
    ae = build_autoencoder(_shape(tuple(int(v) for v in shape)), width=width)
    try:
        ae.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise DataError(f"the saved autoencoder does not fit width {width} and shape {shape} "
                        f"({str(exc).splitlines()[0]})") from None
    return Reformer(ae.eval())


def _detector(model: nn.Module, context: Context, params: dict[str, Any]) -> nn.Module:
    x_train = context.training_data("reconstruction-detector", first=int(params["train"]))[0]
    ae, _ = train_autoencoder(x_train.to(context.device), width=int(params["width"]),
                              noise=float(params["noise"]),
                              settings=AUTOENCODER_TRAINING.replace(epochs=params["epochs"]),
                              seed=context.seed, device=context.device, progress=context.progress)
    return ReconstructionDetector(ae, p=params["p"]).to(context.device)


register(DefenseSpec(
    "autoencoder", kind="preprocess", differentiable=True, random=False, paper=_MAGNET, target=train_autoencoder,
    description="MagNet reformer: deploy Defended(Reformer(ae), model)",
    params=(Param("noise", "float", 0.1, "std of the training noise"), Param("width", "int", 16, "hidden channels"),
            Param("epochs", "int", 20, "training epochs"), Param("lr", "float", 1e-3, "Adam learning rate")),
    fit=_fit, front=_front))
register(DefenseSpec(
    "reconstruction-detector", kind="detector", differentiable=True, random=False, paper=_MAGNET,
    target=ReconstructionDetector, description="flags inputs with mean |x - ae(x)|^p above a clean threshold",
    params=(Param("epochs", "int", 20, "autoencoder epochs"), Param("noise", "float", 0.1, "std of the noise"),
            Param("width", "int", 16, "hidden channels"), Param("p", "float", 1.0, "the error exponent"),
            Param("train", "int", 5000, "training images")),
    detector=_detector))
