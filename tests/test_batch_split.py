"""Batch independence: every attack that does not declare batch_dependent gives each sample the same result
whether it is attacked in one batch or in two (randomness keyed by sample index, sparring.rng); the runner
attacks a batch-dependent one (universal, substitute, lbfgs) in one call, so its records do not depend on
the batch size either."""

from __future__ import annotations

import math

import pytest
import torch

from sparring.attacks import ATTACKS
from sparring.evaluate import AttackSpec, evaluate
from sparring.rng import SampleGenerators
from sparring.threat import Norm, ThreatModel

EPS = {"linf": 0.1, "l2": 0.5, "l1": 2.0}
CASES = [(name, norm) for name in ATTACKS.names() for norm in ATTACKS.meta(name)["norms"]
         if not ATTACKS.meta(name).get("batch_dependent", False)]
DEPENDENT = [name for name in ATTACKS.names() if ATTACKS.meta(name).get("batch_dependent", False)]


def _threat(name: str, norm: str) -> ThreatModel:
    return ThreatModel(Norm(norm), math.inf if ATTACKS.meta(name)["kind"] == "minimal" else EPS.get(norm, 0.1))


def _attack(name: str, norm: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
            rows: range) -> torch.Tensor:
    params = dict(ATTACKS.meta(name).get("test_params", {}))
    return ATTACKS.get(name)(model, x[rows.start:rows.stop], y[rows.start:rows.stop], threat=_threat(name, norm),
                             generator=SampleGenerators(5, rows), **params).detach()


@pytest.mark.parametrize("name,norm", CASES)
def test_a_sample_does_not_depend_on_its_batch(name, norm, model, batch):
    x, y = batch
    whole = _attack(name, norm, model, x, y, range(16))
    split = torch.cat([_attack(name, norm, model, x, y, range(0, 8)), _attack(name, norm, model, x, y, range(8, 16))])
    with torch.no_grad():
        same_verdict = torch.equal(model(whole).argmax(1), model(split).argmax(1))
    assert same_verdict and torch.allclose(whole, split, atol=1e-5, rtol=0), float((whole - split).abs().max())


def test_batch_dependent_attacks_say_so():
    assert {"universal", "substitute", "lbfgs"} <= set(DEPENDENT)


@pytest.mark.parametrize("name", ["universal", "lbfgs"])
def test_the_runner_attacks_a_batch_dependent_attack_in_one_call(name, model, batch):
    x, y = batch
    norm = ATTACKS.meta(name)["norms"][0]
    spec = AttackSpec(name, norm, (("e", EPS[norm]),), params=dict(ATTACKS.meta(name).get("test_params", {})))
    small, large = (evaluate(model, x, y, [spec], seed=0, batch_size=b) for b in (4, 16))
    cells = [[r for r in records if r["kind"] == "attack"][0] for records in (small, large)]
    assert cells[0]["robust_bits"] == cells[1]["robust_bits"] and cells[0]["norms"] == cells[1]["norms"]
