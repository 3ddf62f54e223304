"""Adversarial-example detectors: the shared detector contract, feature squeezing, detection
metrics, and a guard that joins a classifier and a detector into one K+1-class model so an attack
can fool both at once. The trained binary detector (train_detector) lives in ``detector``.

A detector follows the Defense contract (DESIGN.md): ``score(x) -> Tensor (B,)`` (higher means
more likely adversarial) plus a ``threshold``; ``detect(x)`` flags score > threshold and
``fit_threshold(x_clean, fpr)`` sets the threshold at the clean (1 - fpr) quantile. Detectors
declare ``differentiable`` and ``random`` like every defense; a non-differentiable one gives
``for_attack()``, its BPDA version (Athalye et al. 2018, arXiv:1802.00420). Carlini & Wagner
("Adversarial examples are not easily detected", arXiv:1705.07263) broke ten detectors by
attacking classifier and detector together: evaluate a detector with ``DetectorGuard``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from ..util import check_images, check_number
from .base import DefenseSpec, Param, is_differentiable, is_random, register
from .bpda import bpda
from .preprocess import BitDepth, MedianBlur

__all__ = ["Detector", "DetectorGuard", "FeatureSqueezing", "detection_rate_at_fpr", "roc_auc", "threshold_at_fpr"]

_XU = "Xu, Evans, Qi 2018, Feature Squeezing: Detecting Adversarial Examples in Deep Neural Networks, arXiv:1704.01155"


# ---------------------------------------------------------------- validation and metrics


def _scores(values: Any, what: str) -> np.ndarray:
    arr = np.asarray(values.detach().cpu().double() if isinstance(values, Tensor) else values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise InputError(f"expected {what} as a non-empty 1-D array of scores, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputError(f"expected finite {what}, got NaN or infinite values")
    return arr


def threshold_at_fpr(scores_clean: Any, fpr: float = 0.05) -> float:
    """The clean (1 - fpr) quantile (next higher order statistic): at most a fraction fpr of the
    clean scores lies strictly above it, so detect = score > threshold has FPR <= fpr on them.

    Args: scores_clean, 1-D scores of clean inputs; fpr, the false-positive rate in [0, 1).
        >>> threshold_at_fpr(torch.arange(100.0), 0.05)
        95.0
    """
    clean, fpr = _scores(scores_clean, "scores_clean"), float(check_number(fpr, "fpr", low=0, high=1, high_open=True))
    return float(np.quantile(clean, 1 - fpr, method="higher"))


def roc_auc(scores_clean: Any, scores_adv: Any) -> float:
    """Area under the ROC curve, adversarial = positive (sklearn.metrics.roc_auc_score).

    1.0 separates perfectly, 0.5 is chance; ties count one half. Args: 1-D scores (Tensor,
    array or list) of clean and of adversarial inputs, higher meaning more likely adversarial.
        >>> roc_auc([0.1, 0.2], [0.3, 0.9])
        1.0
    """
    from sklearn.metrics import roc_auc_score

    clean, adv = _scores(scores_clean, "scores_clean"), _scores(scores_adv, "scores_adv")
    labels = np.concatenate([np.zeros(len(clean)), np.ones(len(adv))])
    return float(roc_auc_score(labels, np.concatenate([clean, adv])))


def detection_rate_at_fpr(scores_clean: Any, scores_adv: Any, fpr: float = 0.05) -> float:
    """Fraction of adversarial scores above threshold_at_fpr(scores_clean, fpr) (the TPR at that FPR).

    Args: 1-D clean and adversarial scores; fpr in [0, 1).
        >>> detection_rate_at_fpr(torch.arange(100.0), torch.tensor([50.0, 96.0]), fpr=0.05)
        0.5
    """
    threshold = threshold_at_fpr(scores_clean, fpr)
    return float((_scores(scores_adv, "scores_adv") > threshold).mean())


# ---------------------------------------------------------------- the detector contract


class Detector(nn.Module):
    """The detector contract: score(x) (B,), threshold, fit_threshold, detect, margin (> 0 exactly when
    flagged); subclasses give forward(x), the score (or, for BinaryDetector, a logit)."""

    differentiable: ClassVar[bool] = True
    random: ClassVar[bool] = False

    def __init__(self, threshold: float | None) -> None:
        super().__init__()
        self.threshold = None if threshold is None else self.check_threshold(threshold)

    @staticmethod
    def check_threshold(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InputError(f"expected threshold to be a finite number, got {value!r}")
        return float(value)

    def _threshold(self, threshold: float | None) -> float:
        if threshold is not None:
            return self.check_threshold(threshold)
        if self.threshold is None:
            raise InputError("expected a threshold: call fit_threshold(x_clean) or pass threshold=, got None")
        return self.threshold

    def score(self, x: Tensor) -> Tensor:
        """Detection scores (B,): higher means more likely adversarial."""
        return self(x)

    def margin(self, x: Tensor, threshold: float | None = None) -> Tensor:
        """score(x) - threshold: positive exactly where detect(x) is True (DetectorGuard's input)."""
        return self.score(x) - self._threshold(threshold)

    def detect(self, x: Tensor, threshold: float | None = None) -> Tensor:
        """Boolean (B,): True where the input is flagged as adversarial (score > threshold)."""
        with torch.no_grad():
            return self.margin(x, threshold) > 0

    def scores(self, x: Tensor, *, batch_size: int = 512) -> Tensor:
        """score(x) in batches without gradients, on the CPU: (N,)."""
        x = check_images(x)
        batch_size = check_number(batch_size, "batch_size", integer=True, low=1)
        param = next(self.parameters(), None)
        device = param.device if param is not None else x.device
        with torch.no_grad():
            return torch.cat([self.score(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])

    def fit_threshold(self, x_clean: Tensor, fpr: float = 0.05, *, batch_size: int = 512) -> float:
        """Set and return the threshold flagging at most a fraction fpr of x_clean (threshold_at_fpr)."""
        self.threshold = threshold_at_fpr(self.scores(x_clean, batch_size=batch_size), fpr)
        return self.threshold


# ---------------------------------------------------------------- feature squeezing


class FeatureSqueezing(Detector):
    """Feature squeezing (Xu, Evans, Qi 2018, arXiv:1704.01155): score(x) = max over squeezers s of
    || softmax(model(x)) - softmax(model(s(x))) ||_1, in [0, 2].

    Default squeezers: BitDepth(5) and MedianBlur(3) (the paper's 2x2 median is not centred;
    MedianBlur takes odd windows). Both are non-differentiable (differentiable = False); attack
    through for_attack(), which swaps in their BPDA surrogates (arXiv:1802.00420). Squeezers are
    data-specific (the paper: 1 bit + 2x2 median on MNIST, 5 bits + 2x2 median + non-local means
    on CIFAR-10): on 8x8 digits a 3x3 median rewrites clean images (mean clean score 0.52, AUC
    0.64-0.67 against FGSM/PGD at eps 0.1), while squeezers=[BitDepth(3)] reaches 0.95-0.97.
    Args: model, a classifier returning logits; squeezers, input filters (nn.Modules with
        surrogate()); or bits / window for the default pair; threshold, optional.
        >>> fs = FeatureSqueezing(model); fs.fit_threshold(x_clean, fpr=0.05)
        >>> flagged = fs.detect(x_adv)
    """

    def __init__(self, model: nn.Module, squeezers: Sequence[nn.Module] | nn.Module | None = None, *,
                 bits: int | None = None, window: int | None = None, threshold: float | None = None) -> None:
        super().__init__(threshold)
        if not isinstance(model, nn.Module):
            raise InputError(f"expected model to be an nn.Module, got {type(model).__name__}")
        if squeezers is None:
            squeezers = (BitDepth(5 if bits is None else bits), MedianBlur(3 if window is None else window))
        elif bits is not None or window is not None:
            raise InputError(f"expected squeezers or bits/window, got both (bits={bits!r}, window={window!r})")
        listed: list[Any] = list(squeezers) if isinstance(squeezers, (list, tuple, nn.ModuleList)) else [squeezers]
        bad = [type(s).__name__ for s in listed if not isinstance(s, nn.Module)]
        if not listed or bad:
            raise InputError(f"expected one or more squeezers as nn.Modules, got {bad or 'none'}")
        self.model, self.squeezers = model, nn.ModuleList(listed)

    @property
    def differentiable(self) -> bool:  # type: ignore[override]
        return all(is_differentiable(s) for s in self.squeezers) and is_differentiable(self.model)

    def forward(self, x: Tensor) -> Tensor:
        x = check_images(x)
        p = F.softmax(self.model(x), dim=1)
        gaps = [(p - F.softmax(self.model(s(x)), dim=1)).abs().sum(dim=1) for s in self.squeezers]
        return torch.stack(gaps).amax(dim=0)

    def for_attack(self) -> FeatureSqueezing:
        """The same detector (same model, threshold) with each squeezer replaced by bpda(squeezer)."""
        return FeatureSqueezing(self.model, [bpda(s) for s in self.squeezers], threshold=self.threshold)


# ---------------------------------------------------------------- classifier + detector as one model


class DetectorGuard(nn.Module):
    """Classifier and detector as one model with K+1 logits, the last one the "reject" class.

    Carlini & Wagner 2017, "Adversarial examples are not easily detected", arXiv:1705.07263,
    attack G with G_i = Z_i (i < K) and G_K = (Z_D(x) + 1) * max_i Z_i, Z_D the detector's logit.
    This guard uses the additive form G_K = max_i Z_i + m(x), m = detector.margin(x, threshold)
    (score - threshold; for BinaryDetector, z - logit(threshold)): argmax G = K exactly when the
    detector flags x, whatever the sign of the logits (the product form needs max_i Z_i > 0).
    A sample counts as fooled only if it is misclassified AND not flagged: argmax G not in {y, K}
    (``fooled``). Attack G with a targeted attack (target t < K, t != y, loss="margin"), as CW did:
    an untargeted loss on G counts the reject class as success. Non-differentiable detectors:
    attack ``for_attack()`` (BPDA), evaluate the guard itself.
    Args: model, a classifier returning logits (B, K); detector, a detector (score, margin,
        threshold); threshold, overriding detector.threshold.
        >>> guard = DetectorGuard(model, detector)
        >>> x_adv = pgd(guard.for_attack(), x, targets, threat=threat, targeted=True, loss="margin")
    """

    def __init__(self, model: nn.Module, detector: nn.Module, threshold: float | None = None) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise InputError(f"expected model to be an nn.Module, got {type(model).__name__}")
        if not isinstance(detector, nn.Module) or not callable(getattr(detector, "margin", None)):
            raise InputError(f"expected a detector with score/margin (e.g. FeatureSqueezing), got "
                             f"{type(detector).__name__}")  # fmt: skip
        self.model, self.detector = model, detector
        threshold = getattr(detector, "threshold", None) if threshold is None else threshold
        if threshold is None:
            raise InputError("expected a threshold: call detector.fit_threshold(x_clean) or pass threshold=, got None")
        self.threshold = Detector.check_threshold(threshold)

    @property
    def differentiable(self) -> bool:
        return is_differentiable(self.detector) and is_differentiable(self.model)

    @property
    def random(self) -> bool:
        return is_random(self.detector) or is_random(self.model)

    def forward(self, x: Tensor) -> Tensor:
        z = self.model(x)
        reject = z.amax(dim=1) + self.detector.margin(x, self.threshold).to(z.dtype)  # type: ignore[operator]
        return torch.cat([z, reject[:, None]], dim=1)

    def predict(self, x: Tensor) -> Tensor:
        """argmax of the K+1 logits without gradients: a class, or K (rejected)."""
        with torch.no_grad():
            return self(x).argmax(dim=1)

    def fooled(self, x: Tensor, y: Tensor) -> Tensor:
        """Boolean (B,): misclassified AND not flagged (argmax of the K+1 logits neither y nor K)."""
        with torch.no_grad():
            out = self(x)
        pred = out.argmax(dim=1)
        if not isinstance(y, Tensor) or y.shape != pred.shape:
            got = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
            raise InputError(f"expected labels of shape {tuple(pred.shape)}, got {got}")
        y = y.to(pred.device)
        return (pred != y) & (pred != out.shape[1] - 1)

    def for_attack(self) -> DetectorGuard:
        """This guard, or one whose detector is detector.for_attack() when it is not differentiable."""
        if is_differentiable(self.detector):
            return self
        maker = getattr(self.detector, "for_attack", None)
        if not callable(maker):
            raise InputError(f"expected a non-differentiable detector to give for_attack(), got "
                             f"{type(self.detector).__name__}")  # fmt: skip
        return DetectorGuard(self.model, maker(), self.threshold)


register(DefenseSpec(
    "feature-squeezing", kind="detector", differentiable=False, random=False, paper=_XU, target=FeatureSqueezing,
    description="L1 gap between softmax on x and on squeezed x",
    params=(Param("bits", "int", 5, "bit depth of the first squeezer"),
            Param("window", "int", 3, "median window of the second squeezer")),
    detector=lambda model, context, params: FeatureSqueezing(model, **params), meta={"trains": False}))
