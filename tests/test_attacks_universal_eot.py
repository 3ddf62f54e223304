"""Universal perturbations, fooling images, random transformations and EOT-PGD."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparring.attacks import (
    PRESETS,
    Transform,
    eot_pgd,
    evaluate_under_transforms,
    fooling_images,
    pgd,
    universal,
    universal_perturbation,
)
from sparring.data import load_dataset
from sparring.errors import InputError
from sparring.rng import SampleGenerators
from sparring.threat import Norm, ThreatModel


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def digits():
    """tiny_cnn trained for a few seconds on scikit-learn's 8x8 digits (about 92% test accuracy)."""
    from conftest import tiny_cnn
    from sparring.training import TrainSettings, train

    ds = load_dataset("digits")
    net = tiny_cnn()
    train(net, ds.x_train, ds.y_train, TrainSettings(epochs=8, batch_size=64, optimizer="adam", lr=3e-3,
                                                     schedule="none", weight_decay=5e-4))
    x, y = ds.x_test[:64], ds.y_test[:64]
    keep = net(x).argmax(1) == y
    return net, x[keep], y[keep]


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.5)])
def test_universal_delta_in_the_ball_and_shared(model, batch, norm, eps):
    x, y = batch
    x = 0.3 + 0.4 * x  # interior points: clipping into the box never touches the perturbation
    threat = ThreatModel(Norm(norm), eps)
    delta = universal_perturbation(model, x, y, threat=threat, steps=3, minibatch=8, generator=gen())
    assert delta.shape == (1, 1, 8, 8) and float(threat.distance(delta, torch.zeros_like(delta))) <= eps + 1e-6
    x_adv = universal(model, x, y, threat=threat, steps=3, minibatch=8, generator=gen())
    assert torch.allclose(x_adv - x, delta.expand_as(x), atol=1e-6)


def test_universal_fools_a_linear_model_with_one_delta():
    w = torch.cat([torch.ones(32), -torch.ones(32)]) / 32
    layer = nn.Linear(64, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.stack([w, -w]))
        layer.bias.zero_()
    model = nn.Sequential(nn.Flatten(), layer).eval()
    base = torch.cat([torch.full((1, 4, 8), 0.55), torch.full((1, 4, 8), 0.45)], dim=1)
    x = base + 0.04 * torch.rand(64, 1, 8, 8, generator=gen(2)) - 0.02  # all class 0, margin about 0.1
    y = model(x).argmax(1)
    assert bool((y == 0).all())
    x_adv = universal(model, x, y, threat=ThreatModel(Norm.LINF, 0.15), steps=5, minibatch=16, generator=gen())
    assert bool((model(x_adv).argmax(1) != y).all())


def test_fooling_images_reach_the_confidence(digits):
    model = digits[0]
    for start in ("noise", "blank", "zeros"):
        images = fooling_images(model, targets=range(10), shape=(1, 8, 8), start=start, steps=300,
                                step_size=0.02, confidence=0.99, generator=gen())
        probs = model(images).softmax(1)
        assert images.shape == (10, 1, 8, 8) and float(images.min()) >= 0 and float(images.max()) <= 1
        assert bool((probs[torch.arange(10), torch.arange(10)] >= 0.99).all()), start
    again = fooling_images(model, targets=range(10), shape=(1, 8, 8), steps=300, step_size=0.02, generator=gen())
    first = fooling_images(model, targets=range(10), shape=(1, 8, 8), steps=300, step_size=0.02, generator=gen())
    assert torch.equal(again, first)
    with pytest.raises(InputError, match="labels in"):
        fooling_images(model, targets=[12], shape=(1, 8, 8))
    with pytest.raises(InputError, match="start"):
        fooling_images(model, targets=[1], shape=(1, 8, 8), start="gray")


def test_transform_is_deterministic_and_differentiable(batch):
    x, _ = batch
    t = Transform(**PRESETS["physical"], levels=16)
    assert torch.equal(t(x, gen(5)), t(x, gen(5)))
    assert not torch.equal(t(x, gen(5)), t(x, gen(6)))
    out = t(x, gen(5))
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(t(xr, gen(5)).sum(), xr)
    assert torch.isfinite(grad).all() and float(grad.abs().sum()) > 0
    assert torch.equal(Transform()(x, gen()), x)
    with pytest.raises(InputError, match="generator"):
        t(x, None)
    with pytest.raises(InputError, match="scale"):
        Transform(scale=(0.0, 1.0))


def test_transform_per_sample_streams_do_not_depend_on_the_batch(batch):
    x, _ = batch
    t = Transform(**PRESETS["physical"])
    whole = t(x, SampleGenerators(0, range(16)))
    part = t(x[4:9], SampleGenerators(0, range(4, 9)))
    assert torch.allclose(whole[4:9], part, atol=1e-6)


def test_eot_pgd_beats_pgd_under_transformations():
    """A linear model whose weights are a checkerboard plus a small constant: plain PGD follows
    the checkerboard, which a one-pixel shift reverses; EOT finds the shift-invariant direction."""
    i, j = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    w = (((i + j) % 2 * 2 - 1).float().flatten() + 0.4) / 64
    layer = nn.Linear(64, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.stack([w, -w]))
        layer.bias.copy_(torch.stack([0.02 - 0.5 * w.sum(), 0.5 * w.sum() - 0.02]))
    model = nn.Sequential(nn.Flatten(), layer).eval()
    x = 0.49 + 0.02 * torch.rand(32, 1, 8, 8, generator=gen(1))
    y = model(x).argmax(1)
    threat, t = ThreatModel(Norm.LINF, 0.1), Transform(translate=0.125, padding="border")
    plain = pgd(model, x, y, threat=threat, steps=10, generator=gen())
    robust = eot_pgd(model, x, y, threat=threat, transform=t, draws=8, steps=10, generator=gen())
    assert float(threat.distance(robust, x).max()) <= 0.1 + 1e-6 and bool((model(plain).argmax(1) != y).all())
    rate_plain = evaluate_under_transforms(model, plain, y, t, draws=10, generator=gen(9))
    rate_eot = evaluate_under_transforms(model, robust, y, t, draws=10, generator=gen(9))
    assert rate_plain < 0.2 and rate_eot > 0.8, (rate_plain, rate_eot)
