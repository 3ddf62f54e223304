"""APGD, APGD-T, the DLR loss and the "strong" ensemble: oracles and comparisons beyond the
shared invariant suite."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import tiny_cnn
from sparring.attacks import ATTACKS, apgd, apgd_t, pgd, square, strong
from sparring.attacks.apgd import checkpoints
from sparring.attacks.losses import dlr, get_loss
from sparring.attacks.strong import fork
from sparring.errors import InputError, UnknownNameError
from sparring.rng import SampleGenerators
from sparring.threat import Norm, ThreatModel
from test_attacks_oracle import linear_problem


def _images(n: int = 48, seed: int = 1):
    model = tiny_cnn()
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    return model, x, y


def _fooled(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x_adv).argmax(dim=1) != y


def test_dlr_matches_the_formula_on_hand_made_logits():
    z = torch.tensor([[3.0, 1.0, 0.5, -1.0], [0.0, 2.0, -1.0, 4.0]])
    # sorted: (3, 1, 0.5, -1) and (4, 2, 0, -1)
    untargeted = dlr(z, torch.tensor([0, 1]), False)
    assert torch.allclose(untargeted, torch.tensor([-(3 - 1) / (3 - 0.5), -(2 - 4) / (4 - 0)]))
    targeted = dlr(z, torch.tensor([2, 0]), True, true_labels=torch.tensor([0, 1]))
    expect = torch.tensor([(0.5 - 3) / (3 - (0.5 - 1) / 2), (0 - 2) / (4 - (0 - 1) / 2)])
    assert torch.allclose(targeted, expect)
    assert torch.allclose(dlr(2.5 * z + 7, torch.tensor([0, 1]), False), untargeted)  # shift and scale invariant
    assert get_loss("dlr") is dlr


def test_dlr_with_two_classes_is_the_margin():
    z = torch.tensor([[1.0, -0.5]])
    assert torch.allclose(dlr(z, torch.tensor([0]), False), torch.tensor([-1.5]))


def test_checkpoints_follow_the_paper():
    assert sorted(checkpoints(100)) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert max(checkpoints(10)) <= 10


def test_apgd_at_least_as_strong_as_pgd_with_the_same_steps():
    model, x, y = _images()
    for eps in (0.1, 0.15, 0.2):
        threat = ThreatModel(Norm.LINF, eps)
        ours = _fooled(model, apgd(model, x, y, threat=threat, steps=20, generator=torch.Generator().manual_seed(0)), y)
        base = _fooled(model, pgd(model, x, y, threat=threat, steps=20, generator=torch.Generator().manual_seed(0)), y)
        assert int(ours.sum()) >= int(base.sum()), f"eps={eps}: apgd {int(ours.sum())} < pgd {int(base.sum())}"


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_apgd_fools_exactly_the_samples_below_the_closed_form_minimum(norm, loss):
    model, x, y, minimal = linear_problem()
    d = minimal[norm].sort().values
    mid = len(d) // 2
    eps = float(d[mid - 1] + d[mid]) / 2  # between two minimal norms: about half the samples fall
    out = apgd(model, x, y, threat=ThreatModel(Norm(norm), eps), loss=loss, steps=50,
               generator=torch.Generator().manual_seed(0))
    assert torch.equal(_fooled(model, out, y), minimal[norm] < eps)
    targeted = apgd_t(model, x, y, threat=ThreatModel(Norm(norm), eps), steps=50, generator=torch.Generator())
    assert torch.equal(_fooled(model, targeted, y), minimal[norm] < eps)


def test_apgd_targeted_reaches_the_target():
    torch.manual_seed(0)
    model = nn.Linear(20, 5).eval()
    x = 0.3 + 0.4 * torch.rand(32, 20)
    target = (model(x).argmax(1) + 1) % 5
    out = apgd(model, x, target, threat=ThreatModel(Norm.LINF, 0.3), targeted=True, steps=30, loss="dlr",
               generator=torch.Generator().manual_seed(0))
    assert float((model(out).argmax(1) == target).float().mean()) > 0.9


def test_apgd_t_targets_only_wrong_classes_and_keeps_clean_mistakes():
    model, x, y = _images(16)
    y = y.clone()
    y[0] = (y[0] + 1) % 10  # a sample the model already gets wrong is returned as it is
    out = apgd_t(model, x, y, threat=ThreatModel(Norm.LINF, 0.05), steps=5, target_classes=3,
                 generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[0], x[0])
    with pytest.raises(InputError, match="target_classes"):
        apgd_t(model, x, y, threat=ThreatModel(Norm.LINF, 0.05), target_classes=0)


def test_strong_is_never_weaker_than_any_of_its_components():
    model, x, y = _images(32)
    threat = ThreatModel(Norm.LINF, 0.1)
    gens = lambda: SampleGenerators(0, range(len(x)))  # noqa: E731
    out = strong(model, x, y, threat=threat, steps=10, restarts=2, target_classes=2, queries=60, generator=gens())
    assert float(threat.distance(out, x).max()) <= 0.1 + 1e-6
    ours = _fooled(model, out, y)
    parts = {
        "apgd-ce": apgd(model, x, y, threat=threat, steps=10, restarts=2, generator=fork(gens(), 0)),
        "apgd-t": apgd_t(model, x, y, threat=threat, steps=10, restarts=2, target_classes=2,
                         generator=fork(gens(), 1)),
        "square": square(model, x, y, threat=threat, queries=60, generator=fork(gens(), 3)),
    }
    union = torch.zeros_like(ours)
    for name, adv in parts.items():
        alone = _fooled(model, adv, y)
        assert not bool((alone & ~ours).any()), f"{name} fools samples strong misses"
        union |= alone
    assert torch.equal(ours, union) and 0 < int(ours.sum()) < len(x)


def test_strong_in_chunks_gives_each_sample_what_one_batch_gives():
    model, x, y = _images(32)
    threat = ThreatModel(Norm.LINF, 0.1)
    kwargs = dict(threat=threat, steps=10, restarts=2, target_classes=2, queries=60)
    whole = strong(model, x, y, generator=SampleGenerators(0, range(len(x))), **kwargs)
    chunked = strong(model, x, y, batch_size=5, generator=SampleGenerators(0, range(len(x))), **kwargs)
    assert torch.allclose(whole, chunked, atol=1e-5)
    assert torch.equal(_fooled(model, whole, y), _fooled(model, chunked, y))
    with pytest.raises(InputError, match="batch_size"):
        strong(model, x, y, batch_size=0, **kwargs)


def test_strong_minimal_component_needs_a_registered_attack(model, batch):
    x, y = batch
    threat = ThreatModel(Norm.L2, 0.5)
    kwargs = dict(threat=threat, steps=3, target_classes=1, queries=5, minimal=True, generator=torch.Generator())
    if "ddn" in ATTACKS:
        out = strong(model, x, y, **kwargs)
        assert float(threat.distance(out, x).max()) <= 0.5 * (1 + 1e-5)
    else:
        with pytest.raises(UnknownNameError, match="ddn"):
            strong(model, x, y, **kwargs)


def test_apgd_restarts_never_hurt_and_rows_do_not_depend_on_the_batch():
    model, x, y = _images(24)
    threat = ThreatModel(Norm.LINF, 0.1)
    one = apgd(model, x, y, threat=threat, steps=10, generator=torch.Generator().manual_seed(2))
    three = apgd(model, x, y, threat=threat, steps=10, restarts=3, generator=torch.Generator().manual_seed(2))
    assert not bool((_fooled(model, one, y) & ~_fooled(model, three, y)).any())
    whole = apgd(model, x, y, threat=threat, steps=10, generator=SampleGenerators(1, range(len(x))))
    part = apgd(model, x[4:9], y[4:9], threat=threat, steps=10, generator=SampleGenerators(1, range(4, 9)))
    assert torch.allclose(whole[4:9], part)


def test_stacked_apgd_t_matches_one_target_at_a_time_in_strength_and_keeps_rows_independent():
    model, x, y = _images(48)
    threat = ThreatModel(Norm.LINF, 0.06)
    kwargs = dict(threat=threat, steps=10, restarts=2, target_classes=3)
    gens = lambda idx: SampleGenerators(3, idx)  # noqa: E731
    stacked = apgd_t(model, x, y, stack=True, generator=gens(range(len(x))), **kwargs)
    serial = apgd_t(model, x, y, stack=False, generator=gens(range(len(x))), **kwargs)
    assert float(threat.distance(stacked, x).max()) <= 0.06 + 1e-6
    a, b = _fooled(model, stacked, y), _fooled(model, serial, y)
    assert 0 < int(a.sum()) < len(x) and abs(int(a.sum()) - int(b.sum())) <= 2
    part = apgd_t(model, x[5:17], y[5:17], stack=True, generator=gens(range(5, 17)), **kwargs)
    assert torch.allclose(stacked[5:17], part, atol=1e-6)
    one_target = apgd_t(model, x, y, stack=True, generator=gens(range(len(x))), **{**kwargs, "target_classes": 1})
    assert int(a.sum()) >= int(_fooled(model, one_target, y).sum())  # more targets never fool fewer here


def test_tiled_generators_give_each_copy_its_own_stream():
    from sparring.rng import derive, tile, uniform
    g = SampleGenerators(0, [3, 7])
    draws = uniform(tile(g, 3, "copies"), torch.empty(6, 4))
    assert torch.equal(draws[0], uniform(SampleGenerators(derive(0, "copies", 0), [3]), torch.empty(1, 4))[0])
    assert torch.equal(draws[5], uniform(SampleGenerators(derive(0, "copies", 2), [7]), torch.empty(1, 4))[0])
    assert len({tuple(r.tolist()) for r in draws}) == 6
