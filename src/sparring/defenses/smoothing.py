"""Randomized smoothing (Cohen, Rosenfeld, Kolter 2019, "Certified Adversarial Robustness via
Randomized Smoothing", arXiv:1902.02918): g(x) = argmax_c P(f(x + e) = c), e ~ N(0, sigma^2 I),
is robust within L2 radius sigma * Phi^-1(p_A). PREDICT and CERTIFY (the paper's algorithms)
estimate it by Monte Carlo at confidence 1 - alpha; both may abstain (-1).

Noise is drawn per sample (sparring.rng.normal): with a SampleGenerators, a sample's counts,
class and radius do not depend on the rest of the batch (one sample's noisy copies per forward
pass depend only on (n, batch_size)). The caller puts the base model in eval mode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import TrainSettings
from ..errors import ConfigError, InputError
from ..rng import Generators, SampleGenerators, normal, subset
from ..training import Objective, train
from ..util import check_images, check_number
from .base import Context, DefenseSpec, Param, Trained, register

__all__ = ["SmoothedClassifier", "certified_accuracy", "clopper_pearson_lower", "noise_augment", "noise_training"]

ABSTAIN = -1
_COHEN = ("Cohen, Rosenfeld, Kolter 2019, Certified Adversarial Robustness via Randomized Smoothing, "
          "arXiv:1902.02918")  # fmt: skip


def _number(value: Any, what: str, *, zero_ok: bool = False, below_one: bool = False) -> float:
    if below_one:
        return float(check_number(value, what, low=0, high=1, low_open=True, high_open=True))
    return float(check_number(value, what, low=0, low_open=not zero_ok))


def _count(value: Any, what: str, low: int = 1) -> int:
    return int(check_number(value, what, integer=True, low=low))


def _images(x: Any, generator: Generators) -> Tensor:
    check_images(x, empty_ok=True)
    if generator is not None and not isinstance(generator, (torch.Generator, SampleGenerators)):
        raise InputError(f"expected generator to be a torch.Generator, SampleGenerators or None, got {generator!r}")
    if isinstance(generator, SampleGenerators) and len(generator) != len(x):
        raise InputError(f"expected {len(x)} sample generators (one per image), got {len(generator)}")
    return x


def clopper_pearson_lower(successes: Any, trials: int, alpha: float) -> np.ndarray:
    """One-sided Clopper-Pearson lower bound at level 1 - alpha on a binomial proportion k / n:
    the Beta(k, n - k + 1) alpha-quantile, 0 when k = 0 (Cohen et al. 2019, arXiv:1902.02918).

    Args: successes k (int or array, 0 <= k <= trials), trials n >= 1, alpha in (0, 1).
        >>> clopper_pearson_lower([95, 100], 100, 0.001)
        array([0.8446..., 0.9332...])
    """
    from scipy.stats import beta

    trials, alpha = _count(trials, "trials"), _number(alpha, "alpha", below_one=True)
    k = np.asarray(successes, dtype=np.float64)
    if k.size and not (k.min() >= 0 and k.max() <= trials):
        raise InputError(f"expected successes in [0, {trials}], got values in [{k.min()}, {k.max()}]")
    safe = np.maximum(k, 1.0)  # beta(0, .) is undefined; the bound is 0 there
    return np.where(k > 0, beta.ppf(alpha, safe, trials - k + 1), 0.0)


def _binomial_pvalue(top: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Two-sided exact binomial test of top ~ Bin(top + second, 1/2) (scipy's binomtest, vectorized)."""
    from scipy.stats import binom

    return np.minimum(1.0, 2.0 * binom.cdf(np.minimum(top, second), top + second, 0.5))


def noise_augment(x: Tensor, sigma: float, generator: Generators = None) -> Tensor:
    """x + N(0, sigma^2) noise: Gaussian data augmentation for the base classifier of randomized
    smoothing (Cohen et al. 2019, arXiv:1902.02918); train at the sigma you certify with.
    Not clamped to [0, 1], as in the paper: smoothing evaluates f on unclamped x + noise.

    Args: x a batch (B, ...); sigma the noise std (>= 0); generator None, a torch.Generator or a
        SampleGenerators (sparring.rng).
        >>> g = torch.Generator().manual_seed(0)
        >>> x_noisy = noise_augment(x, 0.25, g)
    """
    sigma = _number(sigma, "sigma", zero_ok=True)
    return x + sigma * normal(generator, x)


class NoiseAugmented(Objective):
    """Cross-entropy on x + N(0, sigma^2): the base classifier's objective, noise drawn per (seed, epoch,
    sample index) so a run is reproducible whatever the batch order."""

    def __init__(self, sigma: float, seed: int) -> None:
        self.sigma, self.seed = sigma, seed

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor, epoch: int) -> tuple[Tensor, Tensor | None]:
        gen = SampleGenerators(int(self.seed) * 1_000_003 + epoch, index.tolist())  # as from the start
        logits = model(noise_augment(x, self.sigma, gen))
        return F.cross_entropy(logits, y), logits


def noise_training(model: nn.Module, x_train: Tensor, y_train: Tensor, *, sigma: float = 0.25,
                   settings: TrainSettings | None = None, seed: int = 0, device: str | torch.device = "cpu",
                   x_val: Tensor | None = None, y_val: Tensor | None = None, checkpoint: str | Path | None = None,
                   resume: bool = False, progress: bool = False) -> list[dict[str, Any]]:
    """Train the base classifier of randomized smoothing on x + N(0, sigma^2) (Cohen et al. 2019):
    `sparring.training.train` with the NoiseAugmented objective (fresh noise on every training image).

    Args: sigma the noise std, the one you will certify with; settings, seed, device, x_val, y_val,
    checkpoint, resume, progress as in train(). Returns train()'s history.
        >>> history = noise_training(build_model("mnist-small"), x, y, sigma=0.25, settings=TrainSettings(epochs=5))
        >>> classes, radii = SmoothedClassifier(model.eval(), 0.25, 10).certify(x_test, generator=g)
    """
    objective = NoiseAugmented(_number(sigma, "sigma", zero_ok=True), seed)
    return train(model, x_train, y_train, settings, objective=objective, seed=seed, device=device, x_val=x_val,
                 y_val=y_val, checkpoint=checkpoint, resume=resume, progress=progress)


class SmoothedClassifier:
    """The smoothed classifier g of a base classifier f (Cohen et al. 2019, arXiv:1902.02918).

    Args: base f, an nn.Module in eval mode mapping images (B, C, H, W) to logits (B, num_classes),
        evaluated on unclamped x + noise (train it with noise_augment); sigma the noise std (> 0)
        in input units (radii scale with it); num_classes K >= 2.
        >>> smoothed = SmoothedClassifier(model.eval(), sigma=0.25, num_classes=10)
        >>> classes, radii = smoothed.certify(x, n0=100, n=10_000, generator=g)
    """

    differentiable = False
    random = True

    def __init__(self, base: nn.Module, sigma: float, num_classes: int) -> None:
        if not isinstance(base, nn.Module):
            raise ConfigError(f"expected the base classifier to be an nn.Module, got {type(base).__name__}")
        self.base, self.sigma, self.num_classes = base, _number(sigma, "sigma"), _count(num_classes, "num_classes", 2)

    @torch.no_grad()
    def counts(self, x: Tensor, num: int, *, batch_size: int = 1000, generator: Generators = None) -> Tensor:
        """How often f(x_i + noise) = c over `num` noisy copies of each x_i: int64 (B, K).

            >>> counts = smoothed.counts(x, 100, generator=g)
            >>> counts.sum(1)  # 100 in every row
        """
        x, num, batch_size = _images(x, generator), _count(num, "n"), _count(batch_size, "batch_size")
        per = min(batch_size, num)  # noisy copies of one sample per forward pass
        group = max(1, batch_size // per)  # samples per forward pass
        out = torch.zeros(len(x), self.num_classes, dtype=torch.int64, device=x.device)
        for start in range(0, len(x), group):
            mask = torch.zeros(len(x), dtype=torch.bool)
            mask[start : start + group] = True
            gen, xs = subset(generator, mask), x[start : start + group]
            left = num
            while left > 0:
                m = min(per, left)
                noise = normal(gen, xs.new_empty((len(xs), m, *x.shape[1:])))
                logits = self.base((xs.unsqueeze(1) + self.sigma * noise).flatten(0, 1))
                if logits.shape != (len(xs) * m, self.num_classes):
                    raise InputError(f"expected logits of shape (N, {self.num_classes}), got {tuple(logits.shape)}")
                hits = F.one_hot(logits.argmax(1).view(len(xs), m), self.num_classes)
                out[start : start + group] += hits.sum(1)
                left -= m
        return out

    def predict(self, x: Tensor, *, n: int = 100, alpha: float = 0.001, batch_size: int = 1000,
                generator: Generators = None) -> Tensor:  # fmt: skip
        """The paper's PREDICT: the top class of n noisy samples, or -1 (abstain) unless a two-sided
        binomial test of the top two counts rejects a tie at level alpha. Returns int64 (B,).
            >>> classes = smoothed.predict(x, n=1000, alpha=0.001, generator=g)
            >>> accuracy = (classes == y).float().mean()
        """
        alpha = _number(alpha, "alpha", below_one=True)
        top = self.counts(x, n, batch_size=batch_size, generator=generator).topk(2, dim=1)
        values = top.values.cpu().numpy()
        keep = torch.from_numpy(_binomial_pvalue(values[:, 0], values[:, 1]) <= alpha).to(x.device)
        return torch.where(keep, top.indices[:, 0], torch.full_like(top.indices[:, 0], ABSTAIN))

    def certify(self, x: Tensor, *, n0: int = 100, n: int = 100_000, alpha: float = 0.001,
                batch_size: int = 1000, generator: Generators = None) -> tuple[Tensor, Tensor]:  # fmt: skip
        """The paper's CERTIFY: pick the top class c_A with n0 noisy samples, count it in n fresh
        ones, bound p_A from below (Clopper-Pearson, level 1 - alpha). If the bound is < 1/2,
        abstain (class -1, radius 0); else radius = sigma * Phi^-1(bound).
        Returns classes int64 (B,) and L2 radii float64 (B,), on x's device.
            >>> classes, radii = smoothed.certify(x, n0=100, n=100_000, alpha=0.001, generator=g)
            >>> certified_accuracy(classes, radii, y, radius=0.5)
        """
        from scipy.stats import norm

        n0, n = _count(n0, "n0"), _count(n, "n")
        alpha = _number(alpha, "alpha", below_one=True)
        guess = self.counts(x, n0, batch_size=batch_size, generator=generator).argmax(1)
        counts = self.counts(x, n, batch_size=batch_size, generator=generator)
        hits = counts.gather(1, guess[:, None]).squeeze(1).cpu().numpy()
        lower = clopper_pearson_lower(hits, n, alpha)
        ok = lower >= 0.5
        radii = np.where(ok, self.sigma * norm.ppf(np.where(ok, lower, 0.5)), 0.0)
        classes = torch.where(torch.from_numpy(ok).to(x.device), guess, torch.full_like(guess, ABSTAIN))
        return classes, torch.from_numpy(radii).to(x.device)


def certified_accuracy(classes: Tensor, radii: Tensor, y: Tensor, radius: float) -> float:
    """Fraction of samples certified correct at L2 radius `radius`: class == y and radii >= radius;
    abstentions (-1) never count (Cohen et al. 2019, arXiv:1902.02918, certified test accuracy).
        >>> classes, radii = smoothed.certify(x, generator=g)
        >>> certified_accuracy(classes, radii, y, 0.25)
    """
    radius = _number(radius, "radius", zero_ok=True)
    classes, radii, y = (torch.as_tensor(t).cpu() for t in (classes, radii, y))
    shapes = [tuple(t.shape) for t in (classes, radii, y)]
    if any(len(s) != 1 for s in shapes) or len({s[0] for s in shapes}) != 1 or not len(y):
        raise InputError(f"expected classes, radii and labels as 1-D tensors of one length >= 1, got shapes {shapes}")
    return float(((classes == y) & (radii >= radius)).double().mean())


def _trained(model: nn.Module, context: Context, params: dict[str, Any]) -> Trained:
    """The spec's ``train``: the base classifier trained on Gaussian noise at the sigma it will be certified at."""
    ds = context.dataset
    x_train, y_train = context.training_data("randomized-smoothing")
    history = noise_training(model, x_train, y_train, sigma=float(params["sigma"]), settings=context.settings,
                             seed=context.seed, device=context.device, x_val=ds.x_test, y_val=ds.y_test,
                             checkpoint=context.checkpoint, resume=context.resume, progress=context.progress)
    return Trained(model, history)


register(DefenseSpec(
    "randomized-smoothing", kind="certified", differentiable=False, random=True, paper=_COHEN,
    target=SmoothedClassifier, description="certified L2 radius by Gaussian randomized smoothing",
    params=(Param("sigma", "float", 0.25, "noise std of training and certification"),), train=_trained))
