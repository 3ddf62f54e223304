"""Oracles: a linear classifier whose minimal adversarial perturbation is known in closed form,
and agreement with a straightforward independent PGD / FGSM written out in the test."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparring.attacks import bim, fgsm, fgv, iterative_l2, pgd
from sparring.threat import Norm, ThreatModel


def linear_problem(dim: int = 20, n: int = 64, seed: int = 0):
    """Two-class linear model with inputs in [0.3, 0.7]: the box never binds below 0.3 Linf."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, generator=g)
    model = nn.Linear(dim, 2)
    with torch.no_grad():
        model.weight.copy_(torch.stack([torch.zeros(dim), w]))
        model.bias.zero_()
    x = 0.3 + 0.4 * torch.rand(n, dim, generator=g)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
        margin = (model(x)[:, 1] - model(x)[:, 0]).abs()
    minimal = {"linf": margin / w.abs().sum(), "l2": margin / w.norm(), "l1": margin / w.abs().max()}
    return model.eval(), x, y, minimal


@pytest.mark.parametrize("attack", [fgsm, pgd, bim])
def test_linf_boundary_matches_closed_form(attack):
    model, x, y, minimal = linear_problem()
    d = minimal["linf"]
    keep = d < 0.25
    for factor, expect in [(1.02, True), (0.98, False)]:
        for i in keep.nonzero().flatten().tolist()[:12]:
            threat = ThreatModel(Norm.LINF, float(d[i]) * factor)
            x_adv = attack(model, x[i:i + 1], y[i:i + 1], threat=threat, generator=torch.Generator().manual_seed(0))
            fooled = bool(model(x_adv).argmax(1) != y[i])
            assert fooled == expect, f"sample {i}: eps={factor} x minimal, fooled={fooled}"


def test_l2_pgd_matches_closed_form():
    model, x, y, minimal = linear_problem()
    d = minimal["l2"]
    eps = float(d.median())
    fooled_above = pgd(model, x, y, threat=ThreatModel(Norm.L2, eps), steps=50, step_size=eps / 20,
                       random_start=False)
    # per-sample eps is not a thing; check with eps = 1.02 * d on the samples whose d < 1 / 1.02
    for i in (d < 0.9).nonzero().flatten().tolist()[:10]:
        for factor, expect in [(1.02, True), (0.98, False)]:
            threat = ThreatModel(Norm.L2, float(d[i]) * factor)
            out = pgd(model, x[i:i + 1], y[i:i + 1], threat=threat, steps=50, random_start=False)
            assert bool(model(out).argmax(1) != y[i]) == expect
    assert fooled_above.shape == x.shape
    # one batch at eps = the median minimal distance: exactly the samples below it are fooled (2% margin)
    fooled = model(fooled_above).argmax(1) != y
    clear = (d / eps - 1.0).abs() > 0.02
    assert int((d < 0.98 * eps).sum()) >= 3 and int((d > 1.02 * eps).sum()) >= 3
    assert torch.equal(fooled[clear], (d < eps)[clear])


def test_l1_pgd_reaches_the_closed_form_boundary():
    model, x, y, minimal = linear_problem(dim=10)
    d = minimal["l1"]
    for i in (d < 0.25).nonzero().flatten().tolist()[:8]:
        threat = ThreatModel(Norm.L1, float(d[i]) * 1.05)
        out = pgd(model, x[i:i + 1], y[i:i + 1], threat=threat, steps=100, random_start=False)
        assert bool(model(out).argmax(1) != y[i])
        below = pgd(model, x[i:i + 1], y[i:i + 1], threat=ThreatModel(Norm.L1, float(d[i]) * 0.95), steps=100)
        assert bool(model(below).argmax(1) == y[i])


def test_iterative_l2_within_125_percent_of_minimal():
    model, x, y, minimal = linear_problem()
    out = iterative_l2(model, x, y, targeted=False, steps=2000, step_size=0.01)
    fooled = model(out).argmax(1) != y
    assert bool(fooled.all())
    found = (out - x).norm(dim=1)
    assert bool((found >= minimal["l2"] - 1e-5).all())
    assert bool((found <= 1.25 * minimal["l2"] + 0.011).all())


def test_iterative_l2_targeted_reaches_target_and_stops():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 5)).eval()
    x = 0.3 + 0.4 * torch.rand(32, 20)
    target = (model(x).argmax(1) + 1) % 5
    out = iterative_l2(model, x, target, steps=3000, step_size=0.01)
    assert bool((model(out).argmax(1) == target).all())
    one_step = iterative_l2(model, x, target, steps=1, step_size=0.01)
    assert float((one_step - x).norm(dim=1).max()) <= 0.01 + 1e-6


def test_fgv_step_is_gradient_scaled_to_eps():
    model, x, y, _ = linear_problem()
    eps = 0.05
    out = fgv(model, x, y, threat=ThreatModel(Norm.LINF, eps))
    xr = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr)
    expected = (x + eps * grad / grad.abs().amax(dim=1, keepdim=True)).clamp(0, 1)
    assert torch.allclose(out, expected, atol=1e-6)


def reference_pgd(model, x, y, eps, steps, step_size, generator):
    """A plain, independent Linf PGD: uniform start, sign steps, clip, keep the last fooling iterate."""
    x_adv = (x + (torch.rand(x.shape, generator=generator) * 2 - 1) * eps).clamp(0, 1)
    kept = x.clone()
    hit = torch.zeros(len(x), dtype=torch.bool)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        logits = model(x_adv)
        fooled = logits.argmax(1) != y
        kept[fooled] = x_adv.detach()[fooled]
        hit |= fooled
        grad, = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + step_size * grad.sign(), x - eps), x + eps).clamp(0, 1)
    with torch.no_grad():
        fooled = model(x_adv).argmax(1) != y
    kept[fooled] = x_adv[fooled]
    hit |= fooled
    kept[~hit] = x_adv[~hit]
    return kept


def test_pgd_agrees_with_reference(model, batch):
    x, y = batch
    eps, steps, size = 0.05, 10, 0.0125
    ours = pgd(model, x, y, threat=ThreatModel(Norm.LINF, eps), steps=steps, step_size=size, early_stop=False,
               generator=torch.Generator().manual_seed(5))
    ref = reference_pgd(model, x, y, eps, steps, size, torch.Generator().manual_seed(5))
    assert torch.allclose(ours, ref, atol=1e-6)


def test_fgsm_agrees_with_reference(model, batch):
    x, y = batch
    xr = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr)
    expected = (x + 0.1 * grad.sign()).clamp(0, 1)
    assert torch.equal(fgsm(model, x, y, threat=ThreatModel(Norm.LINF, 0.1)), expected)


def test_restarts_never_hurt(model, batch):
    x, y = batch
    threat = ThreatModel(Norm.LINF, 0.03)
    one = pgd(model, x, y, threat=threat, steps=5, generator=torch.Generator().manual_seed(0))
    many = pgd(model, x, y, threat=threat, steps=5, restarts=4, generator=torch.Generator().manual_seed(0))
    assert int((model(many).argmax(1) != y).sum()) >= int((model(one).argmax(1) != y).sum())
    assert math.isclose(float(threat.distance(many, x).max()), 0.03, rel_tol=1e-4) or float(threat.distance(many, x).max()) < 0.03


def test_early_stop_changes_no_robust_accuracy(model, batch):
    x, y = batch
    threat = ThreatModel(Norm.LINF, 0.05)
    runs = {stop: pgd(model, x, y, threat=threat, steps=10, early_stop=stop, generator=torch.Generator().manual_seed(2))
            for stop in (True, False)}
    fooled = {stop: model(out).argmax(1) != y for stop, out in runs.items()}
    assert torch.equal(fooled[True], fooled[False])
