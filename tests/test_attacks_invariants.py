"""The shared invariant suite: every registered attack, every norm it supports."""

from __future__ import annotations

import math

import pytest
import torch

from sparring.attacks import ATTACKS
from sparring.errors import InputError, SparringError, UnknownNameError
from sparring.threat import Norm, ThreatModel

CASES = [(name, norm) for name in ATTACKS.names() for norm in ATTACKS.meta(name)["norms"]]
EPS = {"linf": 0.1, "l2": 0.5, "l1": 2.0}


def _threat(name: str, norm: str) -> ThreatModel:
    minimal = ATTACKS.meta(name)["kind"] == "minimal"
    return ThreatModel(Norm(norm), math.inf if minimal else EPS[norm])


def _kwargs(name: str) -> dict:
    """Fast hyperparameters an attack declares for this suite (metadata key test_params)."""
    return dict(ATTACKS.meta(name).get("test_params", {}))


def _run(name, norm, model, x, y, seed=0, **extra):
    gen = torch.Generator().manual_seed(seed)
    return ATTACKS.get(name)(model, x, y, threat=_threat(name, norm), generator=gen, **_kwargs(name), **extra)


def test_registry_has_the_gradient_family():
    assert {"fgsm", "fgv", "rand-fgsm", "step-ll", "bim", "pgd", "iterative-l2"} <= set(ATTACKS.names())
    for name in ATTACKS.names():
        meta = ATTACKS.meta(name)
        assert meta["kind"] in ("budget", "minimal", "blackbox", "transfer")
        assert ATTACKS.get(name).__doc__


@pytest.mark.parametrize("name,norm", CASES)
def test_budget_bounds_shape_dtype(name, norm, model, batch):
    x, y = batch
    x_adv = _run(name, norm, model, x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    threat = _threat(name, norm)
    if threat.bounded:
        assert float(threat.distance(x_adv, x).max()) <= threat.eps * (1 + 1e-5) + 1e-6
    assert not x_adv.requires_grad


@pytest.mark.parametrize("name,norm", CASES)
def test_attack_changes_something(name, norm, model, batch):
    x, y = batch
    x_adv = _run(name, norm, model, x, y)
    assert not torch.equal(x_adv, x), "an attack must never silently return its input"


@pytest.mark.parametrize("name,norm", CASES)
def test_deterministic_with_generator(name, norm, model, batch):
    x, y = batch
    assert torch.equal(_run(name, norm, model, x, y, seed=3), _run(name, norm, model, x, y, seed=3))


@pytest.mark.parametrize("name,norm", CASES)
def test_no_gradients_left_and_mode_kept(name, norm, model, batch):
    x, y = batch
    model.train(False)
    _run(name, norm, model, x, y)
    assert all(p.grad is None for p in model.parameters())
    assert not model.training


@pytest.mark.parametrize("name,norm", CASES)
def test_bad_inputs_rejected(name, norm, model, batch):
    x, y = batch
    bad_x = x.clone()
    bad_x[0, 0, 0, 0] = float("nan")
    cases = [
        (bad_x, y, "NaN"),
        (x + 2.0, y, "bounds"),
        (x, y[:-1], "labels of shape"),
        (x, torch.full_like(y, 99), "labels in"),
        (x.flatten(), y, "shape"),
    ]
    for xs, ys, fragment in cases:
        with pytest.raises(InputError, match=fragment):
            _run(name, norm, model, xs, ys)


def test_bad_hyperparameters_rejected(model, batch):
    x, y = batch
    with pytest.raises(InputError, match="eps must be >= 0"):
        ThreatModel(Norm.LINF, -0.1)
    with pytest.raises(InputError, match="steps"):
        ATTACKS.get("pgd")(model, x, y, threat=ThreatModel(Norm.LINF, 0.1), steps=0)
    with pytest.raises(InputError, match="step_size"):
        ATTACKS.get("pgd")(model, x, y, threat=ThreatModel(Norm.LINF, 0.1), step_size=-1.0)
    with pytest.raises(UnknownNameError, match="loss"):
        ATTACKS.get("pgd")(model, x, y, threat=ThreatModel(Norm.LINF, 0.1), loss="hinge")
    with pytest.raises(InputError, match="finite eps"):
        ATTACKS.get("pgd")(model, x, y, threat=ThreatModel(Norm.LINF, math.inf))
    with pytest.raises(InputError, match="norm"):
        ATTACKS.get("fgv")(model, x, y, threat=ThreatModel(Norm.L2, 0.1))
    with pytest.raises(SparringError, match="did you mean 'pgd'"):
        ATTACKS.get("pdg")


def test_eps_zero_returns_a_copy(model, batch):
    x, y = batch
    out = ATTACKS.get("pgd")(model, x, y, threat=ThreatModel(Norm.LINF, 0.0))
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()
