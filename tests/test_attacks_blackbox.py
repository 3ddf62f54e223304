"""Label oracle, Papernot's substitute attack and transfer attacks, on tiny seeded models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import tiny_cnn
from sparring.attacks import ATTACKS, SUBSTITUTE_TRAINING, pgd, substitute, train_substitute, transfer
from sparring.attacks.substitute import jacobian_augment
from sparring.errors import InputError, UnknownNameError
from sparring.evaluate import CountingModel
from sparring.oracle import LabelOracle, QueryBudgetError
from sparring.threat import Norm, ThreatModel

ONE_EPOCH = SUBSTITUTE_TRAINING.replace(epochs=1)


def linear_oracle() -> nn.Module:
    """Two classes split by mean(left half) - mean(right half): linearly separable."""
    w = torch.cat([torch.ones(1, 8, 4), -torch.ones(1, 8, 4)], dim=2).flatten() / 32
    layer = nn.Linear(64, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.stack([w, -w]))
        layer.bias.zero_()
    return nn.Sequential(nn.Flatten(), layer).eval()


class NoGradModel(nn.Module):
    """Fails when called with gradients enabled: the oracle must never record a graph."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or x.requires_grad:
            raise RuntimeError("the target was called with gradients enabled")
        return self.model(x)


class Untouchable(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("a transfer attack must not query the target")


def test_label_oracle_counts_and_enforces_budget(model, batch):
    x, _ = batch
    oracle = LabelOracle(model, budget=20)
    labels = oracle(x.clone().requires_grad_(True))
    assert labels.dtype == torch.int64 and labels.shape == (16,) and labels.grad_fn is None
    assert torch.equal(labels, model(x).argmax(1)) and oracle.queries == 16 and oracle.remaining == 4
    assert oracle.num_classes == 10
    with pytest.raises(QueryBudgetError, match="query budget exceeded"):
        oracle(x[:5])
    assert oracle.queries == 16  # a refused query is not answered and not counted
    oracle(x[:4])
    assert oracle.remaining == 0
    assert not any(isinstance(v, nn.Module) for v in vars(oracle).values())
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(InputError, match="budget"):
        LabelOracle(model, budget=-1)


@pytest.mark.slow
def test_jacobian_augmentation_doubles_or_reservoir(model, batch):
    x, _ = batch
    oracle = LabelOracle(model)
    _, info = train_substitute(oracle, x[:6], arch="mlp", rounds=4, settings=ONE_EPOCH, seed=0)
    assert info["sizes"] == [6, 12, 24, 48] and info["queries"] == 6 + 6 + 12 + 24 == oracle.queries
    _, info = train_substitute(LabelOracle(model), x, arch="mlp", rounds=4, settings=ONE_EPOCH, reservoir=5, seed=0)
    assert info["sizes"] == [16, 21, 26, 31] and info["queries"] == 16 + 15
    _, info = train_substitute(LabelOracle(model), x, arch="mlp", rounds=4, settings=ONE_EPOCH, query_budget=40,
                               seed=0)
    assert info["sizes"] == [16, 32, 40, 40] and info["queries"] == 40
    with pytest.raises(InputError, match="seed images"):
        train_substitute(LabelOracle(model, budget=10), x, rounds=2, settings=ONE_EPOCH)


def test_jacobian_step_follows_the_label_logit_sign():
    oracle = linear_oracle()
    x = torch.full((2, 1, 8, 8), 0.5)
    labels = torch.tensor([0, 1])
    new = jacobian_augment(oracle, x, labels, 0.1)
    w = oracle[1].weight.detach()
    expected = (x.flatten(1) + 0.1 * w[labels].sign()).reshape(x.shape)
    assert torch.allclose(new, expected)


def test_substitute_transfers_on_a_separable_problem():
    oracle = linear_oracle()
    gen = torch.Generator().manual_seed(0)
    seed_x, held = torch.rand(20, 1, 8, 8, generator=gen), torch.rand(200, 1, 8, 8, generator=gen)
    sub, info = train_substitute(LabelOracle(oracle, budget=400), seed_x, arch="mlp", rounds=4,
                                 settings=SUBSTITUTE_TRAINING.replace(epochs=20),
                                 x_eval=held, y_eval=oracle(held).argmax(1), seed=0)
    assert info["queries"] <= 400 and len(info["accuracy"]) == 4
    y = oracle(held).argmax(1)
    x_adv = ATTACKS.get("fgsm")(sub, held, y, threat=ThreatModel(Norm.LINF, 0.3))
    assert float((oracle(x_adv).argmax(1) != y).float().mean()) >= 0.9


def test_substitute_attack_is_label_only_and_within_budget(model, batch):
    x, y = batch
    counted = CountingModel(NoGradModel(model))
    threat = ThreatModel(Norm.LINF, 0.1)
    x_adv = substitute(counted, x, y, threat=threat, seed_size=100, queries=50, rounds=3, epochs=1, arch="mlp",
                       generator=torch.Generator().manual_seed(0))
    assert 16 <= counted.counter.forward <= 50 and counted.counter.backward == 0
    assert float(threat.distance(x_adv, x).max()) <= 0.1 + 1e-6
    assert ATTACKS.meta("substitute")["kind"] == "blackbox" and not ATTACKS.meta("substitute")["needs_grad"]
    with pytest.raises(InputError, match="white-box"):
        substitute(model, x, y, threat=threat, queries=50, rounds=1, epochs=1, craft="transfer")


def test_transfer_to_itself_equals_the_white_box_attack(model, batch):
    x, y = batch
    threat = ThreatModel(Norm.LINF, 0.1)
    params = {"steps": 5, "step_size": 0.03}
    white = pgd(model, x, y, threat=threat, generator=torch.Generator().manual_seed(4), **params)
    for surrogate in (model, [model, model], "self"):
        out = transfer(model, x, y, threat=threat, surrogate=surrogate, craft="pgd", craft_params=params,
                       generator=torch.Generator().manual_seed(4))
        assert torch.allclose(out, white, atol=1e-6)


def test_transfer_never_queries_the_target_and_validates(model, batch):
    x, y = batch
    threat = ThreatModel(Norm.L2, 0.5)
    other = tiny_cnn(seed=1)
    out = transfer(Untouchable(), x, y, threat=threat, surrogate=[model, other], craft="fgsm")
    assert float(threat.distance(out, x).max()) <= 0.5 + 1e-5
    assert all(p.grad is None for m in (model, other) for p in m.parameters())
    with pytest.raises(InputError, match="surrogate"):
        transfer(model, x, y, threat=threat)
    with pytest.raises(InputError, match="resolve_model"):  # names resolve above the attacks (test_cli)
        transfer(model, x, y, threat=threat, surrogate="digits-cnn")
    with pytest.raises(UnknownNameError, match="did you mean"):
        transfer(model, x, y, threat=threat, surrogate=model, craft="pgdd")
    with pytest.raises(InputError, match="no parameter"):
        transfer(model, x, y, threat=threat, surrogate=model, craft="pgd", craft_params={"iterations": 3})
