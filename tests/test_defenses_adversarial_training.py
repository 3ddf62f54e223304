"""Adversarial training recipes: every method trains, determinism, PGD training raises robust
accuracy, clean/adversarial mix, the catastrophic-overfitting guard, ensemble sources, TRADES'
inner maximization against the reference loop, train()'s objective protocol, one-line errors."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import SGD, logged, tiny_cnn
from sparring.attacks import pgd
from sparring.defenses import DEFENSES
from sparring.defenses.adversarial_training import METHODS, adversarial_training
from sparring.errors import ConfigError, InputError, UnknownNameError
from sparring.rng import SampleGenerators, normal
from sparring.threat import Norm, ThreatModel
from sparring.training import Objective, evaluate_accuracy, train

at = importlib.import_module("sparring.defenses.adversarial_training")  # the package exports a function of that name

LINF = ThreatModel(Norm.LINF, 0.1)
FAST = SGD.replace(epochs=1, batch_size=32, optimizer="adam", lr=3e-3, weight_decay=0.0)


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = torch.tensor(data.data / 16, dtype=torch.float32).view(-1, 1, 8, 8)
    x_tr, x_te, y_tr, y_te = train_test_split(x, torch.tensor(data.target), test_size=0.25, random_state=0)
    return x_tr, y_tr, x_te, y_te


def _weights(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _surrogates(method: str) -> dict[str, object]:
    return {"surrogates": [tiny_cnn(5), tiny_cnn(6)]} if method == "ensemble" else {}


@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_trains_through_its_registered_recipe(method: str, digits: tuple[torch.Tensor, ...]) -> None:
    x, y = digits[0][:256], digits[1][:256]
    name = METHODS.meta(method)["defense"]
    meta, recipe = DEFENSES.meta(name), DEFENSES.get(name).target
    assert meta["kind"] == "training" and meta["differentiable"] is True and meta["random"] is False
    assert meta["method"] == method and "arXiv:" in meta["paper"] and "arXiv:" in recipe.__doc__
    model = tiny_cnn()
    before = _weights(model)
    out, history = recipe(model, x, y, threat=LINF, check_size=64, **_surrogates(method), settings=FAST)
    assert out is model and not model.training and not torch.equal(before, _weights(model))
    assert len(history) == 1
    assert {"loss", "train_accuracy", "robust_accuracy", "adversarial_fraction"} <= set(history[0])
    assert history[0]["adversarial_fraction"] == (0.5 if method in ("fgsm", "ensemble") else 1.0)
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("method", ["fgsm-rs", "trades"])
def test_same_seed_same_weights(method: str, digits: tuple[torch.Tensor, ...]) -> None:
    x, y = digits[0][:192], digits[1][:192]
    runs = []
    for seed in (3, 3, 4):
        model = tiny_cnn()
        state = torch.get_rng_state()
        adversarial_training(model, x, y, method=method, threat=LINF, steps=None if method == "fgsm-rs" else 3,
                             check_size=32, seed=seed, settings=FAST)
        assert torch.equal(torch.get_rng_state(), state)  # the caller's global RNG is untouched
        runs.append(_weights(model))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


@pytest.mark.slow
def test_pgd_training_raises_pgd_robust_accuracy(digits: tuple[torch.Tensor, ...]) -> None:
    # Seen (tiny_cnn, seed 0, eps 0.15, 6 epochs): plain 92.7% clean / 10.7% robust,
    # PGD-5 training 76.3% clean / 38.7% robust (seeds 1-3: plain <= 17.3%, adversarial >= 36.7%).
    x_tr, y_tr, x_te, y_te = digits[0], digits[1], digits[2][:300], digits[3][:300]
    threat = ThreatModel(Norm.LINF, 0.15)
    kwargs = dict(settings=FAST.replace(epochs=6))

    def robust(model: nn.Module) -> float:
        x_adv = pgd(model, x_te, y_te, threat=threat, steps=10, generator=SampleGenerators(0, range(len(y_te))))
        with torch.no_grad():
            return float((model(x_adv).argmax(1) == y_te).float().mean())

    plain = tiny_cnn()
    train(plain, x_tr, y_tr, kwargs["settings"])
    adv, history = adversarial_training(tiny_cnn(), x_tr, y_tr, method="pgd", threat=threat, steps=5,
                                        overfit_check=False, **kwargs)
    assert evaluate_accuracy(plain, x_te, y_te) >= 0.85 and evaluate_accuracy(adv, x_te, y_te) >= 0.6
    plain_robust, adv_robust = robust(plain), robust(adv)
    assert plain_robust <= 0.25 and adv_robust >= plain_robust + 0.15, (plain_robust, adv_robust)


@pytest.mark.parametrize("mix", [0.5, 0.0])
def test_mix_keeps_that_fraction_of_each_batch_clean(mix: float, digits: tuple[torch.Tensor, ...]) -> None:
    x, y = digits[0][:256], digits[1][:256]
    model, seen = tiny_cnn(), []
    model.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].detach().clone()) if m.training else None)
    _, history = adversarial_training(model, x, y, method="fgsm", threat=LINF, mix=mix, overfit_check=False,
                                      settings=FAST)
    assert len(seen) == 8 and history[0]["adversarial_fraction"] == 1 - mix
    for batch in seen:
        dist = (batch.flatten(1)[:, None, :] - x.flatten(1)[None]).abs().amax(dim=2).amin(dim=1)  # Linf to nearest
        k = int(mix * len(batch))
        assert torch.all(dist[:k] == 0)  # clean rows are training images
        assert torch.all(dist[k:] > 0) and torch.all(dist[k:] <= LINF.eps + 1e-6)  # adversarial rows move, within eps


def test_crafting_in_eval_mode_with_frozen_parameters(digits: tuple[torch.Tensor, ...]) -> None:
    model, modes = tiny_cnn(), set()
    model.register_forward_pre_hook(lambda m, inp: modes.add((m.training, next(m.parameters()).requires_grad))
                                    if torch.is_grad_enabled() else None)
    adversarial_training(model, digits[0][:64], digits[1][:64], method="pgd", threat=LINF, steps=2,
                         overfit_check=False, settings=FAST)
    assert modes == {(False, False), (True, True)}  # crafting: eval + frozen; update: train + trainable


def test_eps_warmup_ramps_the_crafting_eps_and_step_then_holds(digits: tuple[torch.Tensor, ...],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[int, set[tuple[float, float]]] = {}
    craft = METHODS.get("pgd")

    def record(m, x, y, g, t, steps, size):
        now = sum(line.startswith("epoch") for line in lines)  # epochs logged so far
        seen.setdefault(now, set()).add((round(t.eps, 6), round(size, 6)))
        return craft(m, x, y, g, t, steps, size)

    monkeypatch.setattr(METHODS, "get", lambda name: record)
    with logged() as lines:
        adversarial_training(tiny_cnn(), digits[0][:128], digits[1][:128], method="pgd", threat=LINF, steps=2,
                             step_size=0.08, eps_warmup=2, overfit_check=False,
                             settings=FAST.replace(epochs=4, batch_size=64))
    assert [sorted(seen[e]) for e in sorted(seen)] == [[(0.05, 0.04)], [(0.1, 0.08)], [(0.1, 0.08)], [(0.1, 0.08)]]
    with pytest.raises(InputError, match="eps_warmup"):
        adversarial_training(tiny_cnn(), digits[0][:64], digits[1][:64], method="pgd", threat=LINF, eps_warmup=-1,
                             settings=FAST)


@pytest.mark.parametrize("with_val", [False, True])
def test_overfit_guard_restores_best_weights_and_stops(with_val: bool, digits: tuple[torch.Tensor, ...],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    x, y, x_val, y_val = digits[0][:128], digits[1][:128], digits[2][:40], digits[3][:40]
    script, snapshots = iter([0.5, 0.6, 0.45, 0.3, 0.9]), []  # epoch 3 falls 0.15 (kept), epoch 4 falls 0.3

    def fake_check(model: nn.Module, xc: torch.Tensor, yc: torch.Tensor, **kwargs: object) -> float:
        expected = (x_val[:16], y_val[:16]) if with_val else (x[-16:], y[-16:])
        assert torch.equal(xc, expected[0]) and torch.equal(yc, expected[1])  # the fixed held-out batch
        snapshots.append(_weights(model).clone())
        return next(script)

    monkeypatch.setattr(at, "_robust_accuracy", fake_check)
    model = tiny_cnn()
    val = {"x_val": x_val, "y_val": y_val} if with_val else {}
    with logged() as lines:
        _, history = adversarial_training(model, x, y, method="fgsm-rs", threat=LINF, check_size=16, **val,
                                          settings=FAST.replace(epochs=5, schedule="onecycle"))
    assert [h["robust_accuracy"] for h in history] == [0.5, 0.6, 0.45, 0.3]  # stopped after epoch 4 of 5
    assert history[-1]["overfit"] is True and history[-1]["restored_epoch"] == 2
    assert not any("overfit" in h for h in history[:-1])
    assert torch.equal(_weights(model), snapshots[1]) and not torch.equal(snapshots[1], snapshots[3])
    assert any("catastrophic overfitting" in line and "epoch 2" in line for line in lines)


def test_ensemble_rotates_the_source_and_leaves_surrogates_untouched(digits: tuple[torch.Tensor, ...]) -> None:
    x, y = digits[0][:256], digits[1][:256]
    model, surrogates, calls = tiny_cnn(), [tiny_cnn(5).train(), tiny_cnn(6)], []
    for name, net in zip(("model", "a", "b"), (model, *surrogates)):
        net.register_forward_pre_hook(lambda m, inp, name=name: calls.append(name)
                                      if torch.is_grad_enabled() and not m.training else None)
    before = [_weights(s).clone() for s in surrogates]
    adversarial_training(model, x, y, method="ensemble", threat=LINF, surrogates=surrogates, overfit_check=False,
                         settings=FAST.replace(epochs=2))
    assert calls == (["model", "a", "b"] * 6)[:16]  # one FGSM forward per batch, 8 batches per epoch
    assert all(torch.equal(b, _weights(s)) for b, s in zip(before, surrogates))
    assert surrogates[0].training and not surrogates[1].training  # modes restored
    assert all(p.grad is None and p.requires_grad for s in surrogates for p in s.parameters())


def test_trades_inner_maximization_matches_the_reference_loop(digits: tuple[torch.Tensor, ...]) -> None:
    model, x, y = tiny_cnn().eval(), digits[0][:32], digits[1][:32]
    eps, size, steps = 0.1, 0.02, 5
    mine = METHODS.get("trades")(model, x, y, SampleGenerators(7, range(32)), LINF, steps, size)
    # Zhang et al.'s trades_loss inner loop (KL with reduction sum, sign step, min/max, clamp).
    p_clean = F.softmax(model(x), dim=1).detach()
    x_adv = (x + 0.001 * normal(SampleGenerators(7, range(32)), x)).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.kl_div(F.log_softmax(model(x_adv), dim=1), p_clean, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + size * grad.sign(), x - eps), x + eps).clamp(0, 1)
    assert torch.allclose(mine, x_adv, atol=1e-6) and (mine - x).abs().max() <= eps + 1e-6
    with torch.no_grad():
        kl_start, kl_end = (F.kl_div(F.log_softmax(model(v), dim=1), p_clean, reduction="batchmean")
                            for v in ((x + 0.001 * normal(SampleGenerators(7, range(32)), x)).clamp(0, 1), mine))
    assert kl_end > 100 * kl_start, (float(kl_start), float(kl_end))  # the loop ascends the KL


def test_an_objective_is_a_faithful_drop_in(digits: tuple[torch.Tensor, ...]) -> None:
    x, y = digits[0][:128], digits[1][:128]
    plain, hooked, ends = tiny_cnn(), tiny_cnn(), []

    class CE(Objective):
        def loss(self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, index: torch.Tensor, epoch: int):
            assert torch.equal(xb, x[index]) and torch.equal(yb, y[index])
            logits = model(xb)
            return F.cross_entropy(logits, yb), logits

        def epoch_end(self, epoch: int, record: dict) -> bool:
            ends.append(epoch)
            return epoch == 2

    train(plain, x, y, FAST.replace(epochs=2, schedule="none"))
    history = train(hooked, x, y, FAST.replace(epochs=3, schedule="none"), objective=CE())
    assert torch.equal(_weights(plain), _weights(hooked)) and ends == [1, 2] and len(history) == 2
    with pytest.raises(InputError, match="objective to be a sparring.training.Objective"):
        train(tiny_cnn(), x, y, FAST, objective=3)  # type: ignore[arg-type]


def test_bad_arguments_give_one_line_errors(digits: tuple[torch.Tensor, ...]) -> None:
    x, y = digits[0][:64], digits[1][:64]
    cases = [
        (dict(method="pgdd"), UnknownNameError, "did you mean 'pgd'"),
        (dict(threat=0.1), InputError, "expected threat to be a ThreatModel, got float"),
        (dict(threat=ThreatModel(Norm.LINF, 0.0)), InputError, "finite eps > 0"),
        (dict(threat=ThreatModel(Norm.L0, 3)), InputError, "l1, l2 or linf"),
        (dict(steps=0), InputError, "steps to be an integer >= 1"),
        (dict(method="fgsm", steps=5), ConfigError, "expected steps=None or 1"),
        (dict(method="ensemble", surrogates=[tiny_cnn()], step_size=0.1), ConfigError, "step_size=None"),
        (dict(step_size=0.0), InputError, "step_size to be a finite number > 0"),
        (dict(mix=1.0), InputError, r"mix to be a number in \[0, 1\)"),
        (dict(mix=-0.1), InputError, "mix"),
        (dict(method="trades", mix=0.5), ConfigError, "expected mix=0"),
        (dict(trades_beta=-1.0), InputError, "trades_beta"),
        (dict(method="ensemble"), ConfigError, "needs surrogates"),
        (dict(surrogates=[tiny_cnn()]), ConfigError, "'ensemble' only"),
        (dict(method="ensemble", surrogates=["net"]), InputError, "nn.Modules"),
        (dict(method="ensemble", surrogates=[tiny_cnn(classes=3)]), InputError, "surrogate logits"),
        (dict(x_train=x[:, 0]), InputError, r"\(N, C, H, W\)"),
        (dict(y_train=y[:10]), InputError, "as many training labels"),
        (dict(overfit_drop=2.0), InputError, "overfit_drop"),
        (dict(settings=FAST.replace(epochs=0)), InputError, "epochs"),
    ]
    for overrides, error, message in cases:
        kwargs = {"x_train": x, "y_train": y, "threat": LINF, "settings": FAST, **overrides}
        with pytest.raises(error, match=message) as info:
            adversarial_training(tiny_cnn(), **kwargs)  # type: ignore[arg-type]
        assert "\n" not in str(info.value), str(info.value)
    with pytest.raises(InputError, match="eps must be >= 0"):
        ThreatModel(Norm.LINF, -0.1)


def test_registry_params_are_usable_defaults(digits: tuple[torch.Tensor, ...]) -> None:
    for method in METHODS.names():
        spec = DEFENSES.get(METHODS.meta(method)["defense"])
        kwargs = spec.check({"surrogates": "a+b"} if method == "ensemble" else {})  # the declared defaults
        assert kwargs == {**DEFENSES.meta(spec.name)["params"], **({"surrogates": "a+b"} if method == "ensemble" else {})}
        kwargs.update(steps=2) if "steps" in kwargs else None
        kwargs.update(_surrogates(method))
        model = tiny_cnn()
        before = _weights(model).clone()
        out, history = spec.target(model, digits[0][:64], digits[1][:64], threat=LINF, overfit_check=False,
                                   settings=FAST, **kwargs)
        assert out is model and len(history) == 1 and not torch.equal(before, _weights(model)), method
