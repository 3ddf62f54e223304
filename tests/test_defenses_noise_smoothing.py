"""Gaussian noise layers (PixelDP) and randomized smoothing (Cohen et al. 2019) against oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from sparring.defenses import DEFENSES
from sparring.defenses.noise import GaussianNoise, insert_noise
from sparring.defenses.smoothing import (
    SmoothedClassifier,
    _binomial_pvalue,
    certified_accuracy,
    clopper_pearson_lower,
    noise_augment,
    noise_training,
)
from sparring.errors import ConfigError, InputError
from sparring.models import build_model
from sparring.rng import SampleGenerators

# ---------------------------------------------------------------- Gaussian noise layers


def test_noise_is_fresh_in_eval_mode_with_the_right_std_and_flags():
    layer = GaussianNoise(0.1).eval()
    torch.manual_seed(0)
    x = torch.zeros(100, 1000)
    a, b = layer(x), layer(x)
    assert not torch.equal(a, b)
    assert abs(float(a.std()) - 0.1) < 0.002 and abs(float(a.mean())) < 0.002
    assert GaussianNoise.random is True and GaussianNoise.differentiable is True
    meta = DEFENSES.meta("gaussian-noise")
    assert DEFENSES.get("gaussian-noise").target is GaussianNoise
    assert (meta["kind"], meta["differentiable"], meta["random"]) == ("noise", True, True)
    assert meta["params"] == {"sigma": 0.05, "where": "noise1"}
    assert "1802.03471" in meta["paper"]


def test_noise_zero_sigma_identity_gradient_and_generator():
    x = torch.rand(3, 4)
    assert torch.equal(GaussianNoise(0.0)(x), x)
    xg = x.clone().requires_grad_(True)
    GaussianNoise(0.3)(xg).sum().backward()
    assert torch.equal(xg.grad, torch.ones_like(x))  # additive noise: gradient is the identity
    one = GaussianNoise(0.2, generator=torch.Generator().manual_seed(5))
    two = GaussianNoise(0.2, generator=torch.Generator().manual_seed(5))
    assert torch.equal(one(x), two(x)) and not torch.equal(one(x), x)
    for bad in (-0.1, float("nan"), True):
        with pytest.raises(InputError, match="expected"):
            GaussianNoise(bad)


def test_insert_noise_fills_cifar_cnn_slots_and_reports_missing_ones():
    model = build_model("cifar-cnn", widths=(4, 4, 4), hidden=8).eval()
    assert insert_noise(model, 0.1) is model
    assert isinstance(model.net.noise1, GaussianNoise) and model.net.noise1.sigma == 0.1
    assert isinstance(model.net.noise2, nn.Identity)
    x = torch.rand(2, 3, 32, 32)
    assert not torch.equal(model(x), model(x))  # random at test time
    insert_noise(model, 0.2, where="net.noise2")
    assert isinstance(model.net.noise2, GaussianNoise) and model.net.noise2.sigma == 0.2
    with pytest.raises(ConfigError) as err:
        insert_noise(model, 0.1, where=("noise1", "noise3"))
    msg = str(err.value)
    assert "\n" not in msg and "noise3" in msg and "net.noise1" in msg and "net.noise2" in msg
    with pytest.raises(ConfigError, match="none"):
        insert_noise(build_model("digits-cnn"), 0.1)
    small = insert_noise(build_model("mnist-small"), 0.05, where=("noise1", "noise2")).eval()
    assert isinstance(small.net.features.noise1, GaussianNoise) and isinstance(small.net.classifier.noise2,
                                                                                 GaussianNoise)
    x_small = torch.rand(2, 1, 28, 28)
    assert not torch.equal(small(x_small), small(x_small))  # random at test time


# ---------------------------------------------------------------- randomized smoothing


class LinearBinary(nn.Module):
    """f(x) = argmax([0, w.x + b]): the smoothed classifier's exact radius is |w.x + b| / ||w||."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(score), score], dim=1)


W, B, SIGMA = torch.tensor([3.0, -4.0]), 0.5, 0.5


def points(distances: list[float]) -> torch.Tensor:
    """Points at signed L2 distance t from the boundary w.x + b = 0, shaped (N, 1, 1, 2)."""
    unit = W / W.norm()
    foot = -B * W / W.norm() ** 2
    return torch.stack([foot + t * unit for t in distances]).view(-1, 1, 1, 2)


def test_certify_radius_is_sound_and_tight_on_a_linear_classifier():
    distances = [0.0, 0.3, -0.5, 0.9, -1.5]
    x = points(distances)
    smoothed = SmoothedClassifier(LinearBinary(W, B), SIGMA, num_classes=2)
    classes, radii = smoothed.certify(x, n0=100, n=20_000, alpha=0.001, batch_size=8192,
                                      generator=SampleGenerators(0, range(len(x))))  # fmt: skip
    assert classes.dtype == torch.int64 and radii.shape == (5,)
    assert classes[0] == -1 and radii[0] == 0  # on the boundary: abstain
    for i, t in enumerate(distances[1:], start=1):
        assert classes[i] == int(t > 0)
        assert radii[i] <= abs(t) + 1e-6  # soundness
        assert radii[i] >= 0.8 * abs(t)  # tightness with n = 20000
    assert certified_accuracy(classes, radii, torch.tensor([1, 1, 0, 1, 0]), 0.4) == 0.6  # 3 of 5


def test_predict_is_correct_far_away_and_abstains_on_the_boundary():
    x = points([1.5, -1.5, 0.0])
    smoothed = SmoothedClassifier(LinearBinary(W, B), SIGMA, num_classes=2)
    classes = smoothed.predict(x, n=2000, alpha=0.001, generator=torch.Generator().manual_seed(1))
    assert classes.tolist() == [1, 0, -1]


def test_results_do_not_depend_on_the_batch():
    x = points([0.1, 0.2, 0.35, -0.25, 0.6])
    smoothed = SmoothedClassifier(LinearBinary(W, B), SIGMA, num_classes=2)
    kwargs = dict(n0=100, n=2000, alpha=0.01, batch_size=4096)  # 2 samples per forward for n
    classes, radii = smoothed.certify(x, generator=SampleGenerators(7, range(10, 15)), **kwargs)
    alone_c, alone_r = smoothed.certify(x[3:4], generator=SampleGenerators(7, [13]), **kwargs)
    assert classes[3] == alone_c[0] and radii[3] == alone_r[0] and radii[3] > 0
    small_c, small_r = smoothed.certify(x[2:5], generator=SampleGenerators(7, [12, 13, 14]), **kwargs)
    assert torch.equal(small_c, classes[2:]) and torch.equal(small_r, radii[2:])
    other = smoothed.certify(x, generator=SampleGenerators(8, range(10, 15)), **kwargs)[1]
    assert not torch.equal(other, radii)  # the seed matters


def test_certified_accuracy_by_hand():
    classes, radii = torch.tensor([0, 1, -1, 2]), torch.tensor([0.5, 0.1, 0.0, 1.0])
    y = torch.tensor([0, 1, 0, 1])
    assert certified_accuracy(classes, radii, y, 0.0) == 0.5
    assert certified_accuracy(classes, radii, y, 0.2) == 0.25
    assert certified_accuracy(classes, radii, y, 0.6) == 0.0
    with pytest.raises(InputError, match="expected"):
        certified_accuracy(classes, radii, y[:3], 0.0)


@pytest.mark.parametrize("k, n, alpha", [(90, 100, 0.001), (9990, 10_000, 0.01), (1, 10, 0.05), (500, 1000, 0.2)])
def test_clopper_pearson_matches_scipy_exact_interval(k, n, alpha):
    expected = stats.binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact").low
    assert math.isclose(float(clopper_pearson_lower(k, n, alpha)), expected, rel_tol=1e-9)


def test_clopper_pearson_edges_and_binomial_test():
    assert float(clopper_pearson_lower(0, 50, 0.01)) == 0.0
    assert math.isclose(float(clopper_pearson_lower(50, 50, 0.01)), 0.01 ** (1 / 50), rel_tol=1e-9)
    for top, second in [(60, 40), (55, 45), (30, 30), (100, 0), (7, 2)]:
        expected = stats.binomtest(top, top + second, 0.5).pvalue
        assert math.isclose(float(_binomial_pvalue(np.array(top), np.array(second))), expected, rel_tol=1e-9)
    with pytest.raises(InputError, match="expected"):
        clopper_pearson_lower(11, 10, 0.01)


def test_noise_augment_is_seeded_and_not_clamped():
    x = torch.ones(4, 1, 8, 8)
    a = noise_augment(x, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(a, noise_augment(x, 0.5, torch.Generator().manual_seed(0)))
    assert float(a.max()) > 1.0 and abs(float((a - x).std()) - 0.5) < 0.1


@pytest.mark.slow
def test_noise_training_is_seeded_and_makes_the_base_classifier_robust_to_its_noise():
    from sklearn.datasets import load_digits

    from conftest import SGD
    from sparring.training import train

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16
    y = torch.tensor(digits.target)
    x_tr, y_tr, x_te, y_te = x[:1400], y[:1400], x[1400:], y[1400:]
    kwargs = dict(settings=SGD.replace(epochs=6, optimizer="adam", lr=3e-3, weight_decay=0.0))

    def fit(noisy: bool, seed: int = 0) -> nn.Module:
        torch.manual_seed(0)
        model = build_model("digits-cnn")
        if noisy:
            noise_training(model, x_tr, y_tr, sigma=0.5, seed=seed, **kwargs)
        else:
            train(model, x_tr, y_tr, seed=seed, **kwargs)
        return model.eval()

    plain, noisy = fit(False), fit(True)
    again = fit(True)
    assert all(torch.equal(a, b) for a, b in zip(noisy.state_dict().values(), again.state_dict().values()))
    g = torch.Generator().manual_seed(3)
    x_noisy = noise_augment(x_te, 0.5, g)
    with torch.no_grad():
        acc = {name: float((m(x_noisy).argmax(1) == y_te).float().mean()) for name, m in (("plain", plain),
                                                                                         ("noisy", noisy))}
    assert acc["noisy"] > acc["plain"] + 0.05, acc  # measured 0.69 vs 0.61


def test_smoothing_validates_its_inputs():
    base = LinearBinary(W, B)
    for sigma in (0.0, -1.0, float("inf")):
        with pytest.raises(InputError, match="expected sigma"):
            SmoothedClassifier(base, sigma, 2)
    with pytest.raises(InputError, match="expected num_classes"):
        SmoothedClassifier(base, 0.5, 1)
    with pytest.raises(ConfigError, match="expected"):
        SmoothedClassifier("net", 0.5, 2)  # type: ignore[arg-type]
    smoothed, x = SmoothedClassifier(base, 0.5, 2), points([0.5])
    bad_calls = [
        dict(alpha=0.0), dict(alpha=1.0), dict(n0=0), dict(n=0), dict(batch_size=0),
        dict(generator=SampleGenerators(0, [0, 1])), dict(generator=3),
    ]  # fmt: skip
    for kwargs in bad_calls:
        with pytest.raises(InputError, match="expected"):
            smoothed.certify(x, **{"n": 10, **kwargs})
    with pytest.raises(InputError, match=r"expected images .*got torch.float32 \(1, 2\)"):
        smoothed.predict(torch.zeros(1, 2), n=10)
    with pytest.raises(InputError, match="expected logits of shape"):
        SmoothedClassifier(base, 0.5, 3).predict(x, n=10)
    meta = DEFENSES.meta("randomized-smoothing")
    assert (meta["kind"], meta["differentiable"], meta["random"], meta["params"]) == (
        "certified", False, True, {"sigma": 0.25})  # fmt: skip
    assert "1902.02918" in meta["paper"]
