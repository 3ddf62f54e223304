"""Minimal-perturbation attacks (CW-L2, DDN, L-BFGS, DeepFool, JSMA) against oracles: the linear
model whose minimal adversarial is known in closed form, a small digits classifier for JSMA,
pass counting, determinism, validation; and the L0 norm they brought into threat.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparring.attacks import ATTACKS, cw_l2, ddn, deepfool, jsma, lbfgs
from sparring.errors import InputError
from sparring.evaluate.counting import CountingModel
from sparring.rng import SampleGenerators
from sparring.threat import Norm, ThreatModel, lp_norm
from test_attacks_oracle import linear_problem

L2 = ThreatModel(Norm.L2, math.inf)
LINF = ThreatModel(Norm.LINF, math.inf)
FAST = {  # enough on the linear problem, a fraction of the defaults' cost
    "cw-l2": dict(steps=100, search_steps=5, initial_const=1.0, lr=0.05),
    "ddn": dict(steps=50),
    "lbfgs": dict(steps=30, search_steps=8, initial_const=0.1),
    "deepfool": {},
}


@pytest.mark.parametrize("name", ["cw-l2", "ddn", "lbfgs", "deepfool"])
def test_l2_within_125_percent_of_closed_form(name):
    model, x, y, minimal = linear_problem()
    out = ATTACKS.get(name)(model, x, y, threat=L2, **FAST[name])
    assert bool((model(out).argmax(1) != y).all())
    ratio = (out - x).norm(dim=1) / minimal["l2"]
    assert float(ratio.min()) >= 1 - 1e-4, "no attack can beat the closed-form minimum"
    assert float(ratio.max()) <= 1.25
    assert float(ratio.median()) <= 1.03  # DeepFool: its 2% overshoot


def test_cw_warm_start_is_as_close_on_the_oracle_in_fewer_passes():
    model, x, y, minimal = linear_problem()
    counted = {}
    for warm in (False, True):
        counting = CountingModel(model)
        out = cw_l2(counting, x, y, threat=L2, warm_start=warm, **FAST["cw-l2"])
        assert bool((model(out).argmax(1) != y).all())
        ratio = (out - x).norm(dim=1) / minimal["l2"]
        assert float(ratio.min()) >= 1 - 1e-4 and float(ratio.max()) <= 1.25
        counted[warm] = (counting.counter.forward, float(ratio.median()))
    assert counted[True][1] <= counted[False][1] + 1e-3  # the next constant starts at the last point, not at x
    assert counted[True][0] < 0.9 * counted[False][0]  # and converges (aborts early) sooner


def test_deepfool_is_exact_on_a_linear_binary_model():
    model, x, y, minimal = linear_problem()
    for threat, norm in ((L2, "l2"), (LINF, "linf")):
        out = deepfool(model, x, y, threat=threat, overshoot=0.02)
        assert bool((model(out).argmax(1) != y).all())
        ratio = lp_norm(out - x, Norm(norm)) / minimal[norm]
        assert float(ratio.min()) >= 1.0 and float(ratio.max()) <= 1.02 + 1e-3


def test_deepfool_counts_one_forward_and_target_classes_backwards_per_step():
    model, x, y, _ = linear_problem(n=8)
    counted = CountingModel(nn.Sequential(model, nn.Identity()))
    deepfool(counted, x, y, threat=L2, target_classes=1)
    # linear: step 1 crosses, step 2 only checks (no gradient): 8 + 8 forwards, 8 backwards
    assert (counted.counter.forward, counted.counter.backward) == (16, 8)


def test_fooled_samples_leave_deepfool_batch():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 16), nn.Tanh(), nn.Linear(16, 5)).eval()
    x = 0.3 + 0.4 * torch.rand(32, 20)
    y = model(x).argmax(1)
    counted = CountingModel(model)
    out = deepfool(counted, x, y, threat=L2, steps=50, target_classes=4)
    assert bool((model(out).argmax(1) != y).all())
    assert counted.counter.forward < 6 * len(x)
    assert counted.counter.backward <= 4 * counted.counter.forward


@pytest.mark.parametrize("fn,kwargs", [(cw_l2, FAST["cw-l2"]), (ddn, FAST["ddn"]), (lbfgs, FAST["lbfgs"])])
def test_targeted_reaches_the_target(fn, kwargs):
    torch.manual_seed(0)
    model = nn.Linear(20, 5).eval()
    x = 0.3 + 0.4 * torch.rand(16, 20)
    target = (model(x).argmax(1) + 1) % 5
    out = fn(model, x, target, targeted=True, **kwargs)
    assert bool((model(out).argmax(1) == target).all())
    assert float((out - x).norm(dim=1).max()) < 2.0


def test_already_fooled_samples_come_back_unchanged_and_finite_eps_is_respected():
    model, x, y, minimal = linear_problem()
    wrong = y.clone()
    wrong[:4] = 1 - wrong[:4]
    for name in ("ddn", "deepfool", "cw-l2"):
        out = ATTACKS.get(name)(model, x, wrong, threat=L2, **FAST[name])
        assert torch.equal(out[:4], x[:4])
        eps = float(minimal["l2"].median())
        bounded = ATTACKS.get(name)(model, x, y, threat=ThreatModel(Norm.L2, eps), **FAST[name])
        norms = (bounded - x).norm(dim=1)
        assert float(norms.max()) <= eps * (1 + 1e-5) + 1e-6
        far = minimal["l2"] > eps * 1.01
        assert torch.equal(bounded[far], x[far])


@pytest.fixture(scope="module")
def digits_model():
    """A small MLP trained for a second on scikit-learn's 8x8 digits, and 48 test images."""
    from sparring.data import load_dataset

    ds = load_dataset("digits", train=True)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(100):
        opt.zero_grad()
        F.cross_entropy(model(ds.x_train.float()), ds.y_train).backward()
        opt.step()
    model.eval().requires_grad_(False)
    return model, ds.x_test[:48].float(), ds.y_test[:48]


def test_jsma_targeted_reaches_target_changing_at_most_max_fraction(digits_model):
    model, x, y = digits_model
    target = (y + 1) % 10
    out = jsma(model, x, target, threat=ThreatModel(Norm.L0, math.inf), targeted=True, max_fraction=0.2)
    changed = lp_norm(out - x, Norm.L0)
    reached = model(out).argmax(1) == target
    assert float(reached.float().mean()) >= 0.8
    assert float(changed.max()) <= 0.2 * 64
    assert bool((out[reached] >= x[reached]).all()), "theta = +1 only raises features"
    assert torch.equal(out[~reached], x[~reached])


def test_jsma_untargeted_and_decreasing(digits_model):
    model, x, y = digits_model
    out = jsma(model, x, y, max_fraction=0.2)
    assert float((model(out).argmax(1) != y).float().mean()) >= 0.8
    down = jsma(model, x, y, max_fraction=0.2, increase=False)
    assert bool((down <= x).all()) and not torch.equal(down, x)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cw-l2", "ddn", "lbfgs", "deepfool", "jsma"])
def test_deterministic_and_batch_independent(name, model, batch):
    x, y = batch
    kwargs = ATTACKS.meta(name)["test_params"]
    threat = ThreatModel(Norm(ATTACKS.meta(name)["norms"][0]), math.inf)
    fn = ATTACKS.get(name)
    one = fn(model, x, y, threat=threat, generator=SampleGenerators(0, range(len(x))), **kwargs)
    two = fn(model, x, y, threat=threat, generator=torch.Generator().manual_seed(1), **kwargs)
    assert torch.equal(one, two)
    if name not in ("lbfgs",):  # L-BFGS-B shares its line search across the batch
        half = fn(model, x[:8], y[:8], threat=threat, **kwargs)
        assert torch.allclose(half, one[:8], atol=1e-5)


def test_bad_hyperparameters_rejected(model, batch):
    x, y = batch
    cases = [
        (deepfool, dict(threat=ThreatModel(Norm.L1, math.inf)), "supports norm"),
        (deepfool, dict(target_classes=0), "target_classes"),
        (deepfool, dict(overshoot=-0.1), "overshoot"),
        (ddn, dict(norm_step=1.5), "norm_step"),
        (ddn, dict(steps=0), "steps"),
        (cw_l2, dict(search_steps=0), "search_steps"),
        (cw_l2, dict(initial_const=0.0), "initial_const"),
        (lbfgs, dict(threat=LINF), "supports norm"),
        (jsma, dict(max_fraction=0.01), "max_fraction"),
        (jsma, dict(threat=L2), "supports norm"),
    ]
    for fn, kwargs, fragment in cases:
        with pytest.raises(InputError, match=fragment):
            fn(model, x, y, **kwargs)


def test_l0_norm_in_threat_model():
    assert Norm.parse("l0") is Norm.L0 and Norm.parse("0") is Norm.L0
    delta = torch.tensor([[0.0, 1e-7, -0.5, 2.0], [0.0, 0.0, 0.0, 0.0]])
    assert lp_norm(delta, Norm.L0).tolist() == [2.0, 0.0]
    threat = ThreatModel(Norm.L0, 3)
    x = torch.rand(2, 4)
    with pytest.raises(InputError, match="not supported for l0"):
        threat.project(x, x)
    with pytest.raises(InputError, match="not supported for l0"):
        threat.random_init(x, None)
    with pytest.raises(InputError, match="not supported for l0"):
        threat.step(x, 0.1)
    assert threat.distance(x + delta, x).tolist() == [2.0, 0.0]
