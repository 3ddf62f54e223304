"""filter_sweep / honest_check: the blur article's ranking and the honest number, on digits with a tiny CNN."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from conftest import tiny_cnn
from sparring.attacks import iterative_l2
from sparring.data import load_dataset
from sparring.defenses import BPDA, Defended, GaussianBlur, GaussianNoise, MedianBlur
from sparring.defenses.sweep import ARTICLE_ATTACK, ROW_KEYS, SWEEP_TRAINING, filter_sweep, honest_check
from sparring.errors import InputError, UnknownNameError
from sparring.training import evaluate_accuracy, train

N_TRAIN, N_ATTACK, EPOCHS = 1347, 24, 8
FAST = dict(settings=SWEEP_TRAINING.replace(epochs=EPOCHS, batch_size=64, lr=3e-2), seed=0)


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, ...]:
    ds = load_dataset("digits")
    return ds.x_train[:N_TRAIN], ds.y_train[:N_TRAIN], ds.x_test, ds.y_test


class Spy:
    """The article's attack, recording what it was given: the attacked module and its input gradient."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool, float]] = []

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, **params: object) -> torch.Tensor:
        x0 = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(x0).logsumexp(1).sum() - model(x0).gather(1, y[:, None]).sum(), x0)
        self.calls.append((type(model.preprocess).__name__, isinstance(model.preprocess, BPDA),
                           float(grad.abs().sum())))
        return iterative_l2(model, x, y, **params)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def swept(digits: tuple[torch.Tensor, ...]) -> tuple[list[dict], Spy]:
    spy = Spy()
    rows = filter_sweep(tiny_cnn, *digits, filters=[("gaussian", 0.0), ("gaussian", 1.0), ("median", 3)],
                        attack=spy, attack_params={**ARTICLE_ATTACK, "steps": 300}, eps=1.0, n_attack=N_ATTACK, **FAST)
    return rows, spy


def test_rows_have_the_keys_and_numbers_in_range(swept: tuple[list[dict], Spy]) -> None:
    rows, _ = swept
    assert [set(r) for r in rows] == [set(ROW_KEYS)] * 3
    assert sorted(r["setting"] for r in rows) == ["gaussian sigma=0", "gaussian sigma=1", "median window=3"]
    for r in rows:
        assert 0.5 < r["clean_accuracy"] <= 1 and 0 < r["n_attacked"] <= r["n_attack"] == N_ATTACK
        assert 0 < r["success_rate"] <= 1 and 0 <= r["robust_accuracy"] <= r["n_attacked"] / N_ATTACK
        assert 0 < r["median_l2"] < 8 and 0 < r["mean_l2"] < 8 and r["eps"] == 1.0  # 8 = diameter of [0,1]^64
        assert isinstance(r["model"], Defended) and not r["model"].training


def test_score_is_clean_accuracy_times_mean_l2(swept: tuple[list[dict], Spy], digits: tuple[torch.Tensor, ...]) -> None:
    for r in swept[0]:
        assert r["score"] == pytest.approx(r["clean_accuracy"] * r["mean_l2"], rel=1e-12)
        # the article's accuracy is the clean accuracy of the filtered network on the whole test split
        assert r["clean_accuracy"] == evaluate_accuracy(r["model"], digits[2], digits[3])


def test_rows_are_sorted_by_score_and_the_first_is_marked_best(swept: tuple[list[dict], Spy]) -> None:
    scores = [r["score"] for r in swept[0]]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == 3
    assert [r["best"] for r in swept[0]] == [True, False, False]


def test_sigma_zero_is_training_without_a_filter(digits: tuple[torch.Tensor, ...]) -> None:
    row, = filter_sweep(tiny_cnn, *digits, filters=[("gaussian", 0.0)], attack_params={"steps": 5}, n_attack=4, **FAST)
    plain = Defended(nn.Identity(), tiny_cnn(0))
    train(plain, digits[0], digits[1], **FAST)
    mine, theirs = row["model"].model.state_dict(), plain.model.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert row["clean_accuracy"] == evaluate_accuracy(plain, digits[2], digits[3])


def test_the_median_is_attacked_through_bpda_with_nonzero_gradients(swept: tuple[list[dict], Spy]) -> None:
    rows, spy = swept
    seen = {name: (is_bpda, grad) for name, is_bpda, grad in spy.calls}
    assert seen.keys() == {"GaussianBlur", "BPDA"}  # the median never reaches the attack bare
    assert seen["BPDA"][0] and seen["BPDA"][1] > 0 and seen["GaussianBlur"][1] > 0
    assert {r["setting"]: r["bpda"] for r in rows} == {"gaussian sigma=0": False, "gaussian sigma=1": False,
                                                       "median window=3": True}
    median = next(r for r in rows if r["filter"] == "median")["model"]
    assert isinstance(median.preprocess, MedianBlur) and isinstance(median.for_attack().preprocess, BPDA)


def test_honest_check_is_not_above_the_sweeps_robust_accuracy(swept: tuple[list[dict], Spy],
                                                               digits: tuple[torch.Tensor, ...]) -> None:
    x, y = digits[2][:N_ATTACK], digits[3][:N_ATTACK]
    for r in swept[0]:
        honest = honest_check(r, x, y, steps=20)
        assert honest["eps"] == r["eps"] and honest["attacks"] == ("pgd", "apgd") and not honest["eot"]
        assert honest["clean_accuracy"] == pytest.approx(r["n_attacked"] / N_ATTACK)
        assert honest["robust_accuracy"] <= min(honest["per_attack"].values()) <= honest["clean_accuracy"]
        assert honest["robust_accuracy"] <= r["robust_accuracy"], r["setting"]
        assert honest["bpda"] == (r["filter"] == "median")
    best = swept[0][0]
    small, large = (honest_check(best, x, y, eps=e, steps=20)["robust_accuracy"] for e in (0.05, 3.0))
    assert small >= large


def test_honest_check_adds_eot_for_a_random_defense(digits: tuple[torch.Tensor, ...]) -> None:
    noisy = Defended(nn.Sequential(GaussianBlur(1.0), GaussianNoise(0.1)), tiny_cnn(0))
    honest = honest_check(noisy, digits[2][:8], digits[3][:8], eps=1.0, steps=2, draws=2)
    assert honest["eot"] and set(honest["per_attack"]) == {"pgd", "apgd", "eot-pgd"}


def _never_built() -> nn.Module:
    raise AssertionError("arguments must be checked before any model is built")


@pytest.mark.parametrize("kwargs, message", [
    ({"filters": [("box", 1.0)]}, "unknown filter kind 'box'"),
    ({"filters": [("gaussian", 1.0), ("gaussian", -0.5)]}, "sigma"),
    ({"filters": [("median", 4)]}, "window"),
    ({"filters": [("median",)]}, "(kind, value) pairs"),
    ({"filters": []}, "non-empty"),
    ({"eps": -1.0}, "eps"),
    ({"n_attack": 0}, "n_attack"),
    ({"attack": "no-such-attack"}, "no-such-attack"),
])
def test_bad_arguments_give_one_line_errors(digits: tuple[torch.Tensor, ...], kwargs: dict, message: str) -> None:
    with pytest.raises((InputError, UnknownNameError)) as info:
        filter_sweep(_never_built, *digits, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_honest_check_rejects_what_is_not_a_defended_model(digits: tuple[torch.Tensor, ...]) -> None:
    with pytest.raises(InputError, match="Defended"):
        honest_check(tiny_cnn(0), digits[2][:4], digits[3][:4], eps=1.0)
    with pytest.raises(InputError, match="eps"):
        honest_check(Defended(nn.Identity(), tiny_cnn(0)), digits[2][:4], digits[3][:4], eps=math.inf)
