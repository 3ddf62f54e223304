"""Square Attack: forward passes only, query budget per sample, ball and box, the linear oracle,
and results that do not depend on the batch a sample comes in."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparring.attacks import square
from sparring.attacks.square import _linf_propose, side
from sparring.errors import InputError
from sparring.evaluate import CountingModel
from sparring.rng import SampleGenerators
from sparring.threat import Norm, ThreatModel
from test_attacks_oracle import linear_problem

EPS = {"linf": 0.2, "l2": 1.0}


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_forward_passes_only_within_the_query_budget(norm, model, batch):
    x, y = batch
    counted = CountingModel(model)
    out = square(counted, x, y, threat=ThreatModel(Norm(norm), EPS[norm]), queries=40, generator=torch.Generator())
    assert counted.counter.backward == 0
    assert 0 < counted.counter.forward <= 40 * len(x)
    threat = ThreatModel(Norm(norm), EPS[norm])
    assert float(threat.distance(out, x).max()) <= EPS[norm] * (1 + 1e-5)
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    for i in range(3):  # per sample: never more than `queries`
        one = CountingModel(model)
        square(one, x[i:i + 1], y[i:i + 1], threat=threat, queries=25, generator=torch.Generator())
        assert one.counter.forward <= 25


def test_fooled_samples_are_not_queried_again(model, batch):
    x, y = batch
    sizes: list[int] = []

    class Recording(nn.Module):
        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            sizes.append(inputs.shape[0])
            return model(inputs)

    out = square(Recording(), x, y, threat=ThreatModel(Norm.LINF, 0.5), queries=200, generator=torch.Generator())
    robust = int((model(out).argmax(1) == y).sum())
    assert robust < len(x) // 2
    assert sizes == sorted(sizes, reverse=True) and len(sizes) <= 200  # the active batch only shrinks
    assert sizes[-1] == robust if robust else len(sizes) < 200
    assert sum(sizes) < 200 * len(x) / 2


def _linear_images():
    model, x, y, minimal = linear_problem()
    return nn.Sequential(nn.Flatten(), model).eval(), x.reshape(-1, 1, 4, 5), y, minimal


@pytest.mark.slow
@pytest.mark.parametrize("norm,factor", [("linf", 1.1), ("l2", 1.5)])
def test_fools_the_linear_model_just_above_the_minimal_norm(norm, factor):
    model, x, y, minimal = _linear_images()
    d = minimal[norm]
    rows = (d < (0.25 if norm == "linf" else 1.0)).nonzero().flatten()[:12].tolist()
    hits = 0
    for i in rows:
        threat = ThreatModel(Norm(norm), float(d[i]) * factor)
        out = square(model, x[i:i + 1], y[i:i + 1], threat=threat, queries=600,
                     generator=torch.Generator().manual_seed(i))
        assert float(threat.distance(out, x[i:i + 1])) <= threat.eps * (1 + 1e-5)
        hits += int(model(out).argmax(1) != y[i])
        below = square(model, x[i:i + 1], y[i:i + 1], threat=ThreatModel(Norm(norm), float(d[i]) * 0.97), queries=50)
        assert bool(model(below).argmax(1) == y[i])  # no false success below the minimal norm
    assert hits >= 0.8 * len(rows)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_result_does_not_depend_on_the_batch(norm, model, batch):
    x, y = batch
    threat = ThreatModel(Norm(norm), EPS[norm])
    whole = square(model, x, y, threat=threat, queries=30, generator=SampleGenerators(4, range(len(x))))
    part = square(model, x[5:9], y[5:9], threat=threat, queries=30, generator=SampleGenerators(4, range(5, 9)))
    assert torch.allclose(whole[5:9], part)


def test_square_schedule_and_validation(model, batch):
    assert side(0.8, 0, 28, 28) == 25 and side(0.8, 11, 28, 28) == 18 and side(0.8, 9000, 28, 28) == 1
    assert side(0.8, 9000, 28, 28, least=3) == 3
    x, y = batch
    with pytest.raises(InputError, match="norm"):
        square(model, x, y, threat=ThreatModel(Norm.L1, 1.0))
    with pytest.raises(InputError, match="queries"):
        square(model, x, y, threat=ThreatModel(Norm.LINF, 0.1), queries=0)
    with pytest.raises(InputError, match="p_init"):
        square(model, x, y, threat=ThreatModel(Norm.LINF, 0.1), p_init=1.5)
    with pytest.raises(InputError, match="B, C, H, W"):
        square(model, x.flatten(1), y, threat=ThreatModel(Norm.LINF, 0.1))


def test_linf_proposal_always_changes_the_current_point():
    threat = ThreatModel(Norm.LINF, 0.3)
    x = (torch.rand(256, 1, 6, 6, generator=torch.Generator().manual_seed(0)) < 0.5).float()  # saturated pixels
    cur = threat.clamp(x + 0.3)  # every one-pixel proposal with sign +1 changes nothing
    gen = SampleGenerators(0, range(256))
    for s in (1, 2):
        new = _linf_propose(x, cur, s, 0.3, gen, threat)
        assert bool((new != cur).flatten(1).any(dim=1).all())
        assert float((new - x).abs().max()) <= 0.3 + 1e-6 and float(new.min()) >= 0 and float(new.max()) <= 1


def test_linf_proposal_draws_uniformly_among_the_sign_vectors_that_change_the_point():
    threat = ThreatModel(Norm.LINF, 0.1)
    n = 7000
    x = torch.full((n, 3, 4, 4), 0.5)
    cur = threat.clamp(x + 0.1 * torch.tensor([1.0, -1.0, 1.0])[None, :, None, None])  # signs (+, -, +) are stuck
    new = _linf_propose(x, cur, 4, 0.1, SampleGenerators(0, range(n)), threat)  # the window is the whole image
    signs = torch.sign(new - x)[:, :, 0, 0]
    codes = ((signs > 0).long() * torch.tensor([1, 2, 4])).sum(1)
    counts = torch.bincount(codes, minlength=8)
    assert int(counts[0b101]) == 0
    others = counts[[c for c in range(8) if c != 0b101]].float()
    assert float((others / n - 1 / 7).abs().max()) < 0.02
