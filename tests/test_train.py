"""The training loop: digits accuracy, determinism, augmentation, schedules, checkpoints, errors."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import SGD, logged
from sparring import load_model
from sparring.errors import InputError, UnknownNameError
from sparring.models import build_model
from sparring.training import SCHEDULES, TrainSettings, augment_batch, evaluate_accuracy, train


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = torch.tensor(data.data / 16, dtype=torch.float32).view(-1, 1, 8, 8)
    y = torch.tensor(data.target)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=0)
    return x_tr, y_tr, x_te, y_te


def _fresh(name: str = "digits-cnn", **kwargs: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, **kwargs)


@pytest.mark.slow
def test_digits_cnn_reaches_90_percent(digits: tuple[torch.Tensor, ...]) -> None:
    x_tr, y_tr, x_te, y_te = digits
    model = _fresh()
    with logged() as lines:
        history = train(model, x_tr, y_tr, SGD.replace(epochs=5, batch_size=32, optimizer="adam", lr=2e-3,
                                                       weight_decay=0.0), x_val=x_te, y_val=y_te)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5] and len(lines) == 5
    assert {"loss", "train_accuracy", "val_accuracy", "lr", "time_s"} <= set(history[-1])
    assert history[-1]["val_accuracy"] >= 0.90
    assert not model.training
    assert evaluate_accuracy(model, x_te, y_te) == pytest.approx(history[-1]["val_accuracy"])


def test_same_seed_same_weights_and_global_rng_untouched(digits: tuple[torch.Tensor, ...]) -> None:
    x_tr, y_tr, _, _ = digits
    base = _fresh()
    runs = []
    state = torch.get_rng_state()
    for seed in (3, 3, 4):
        model = copy.deepcopy(base)
        train(model, x_tr, y_tr, SGD.replace(epochs=1, batch_size=64, augment="crop-flip", pad=1), seed=seed)
        runs.append(torch.cat([p.flatten() for p in model.parameters()]))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    assert torch.equal(torch.get_rng_state(), state)


def test_dropout_is_seeded_too() -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(24, 3, 32, 32, generator=g), torch.randint(0, 10, (24,), generator=g)
    base = _fresh("cifar-cnn", widths=(4, 8, 8), hidden=16)
    weights = []
    for _ in range(2):
        model = copy.deepcopy(base)
        train(model, x, y, SGD.replace(epochs=1, batch_size=8), seed=1)
        weights.append(torch.cat([p.flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_crop_flip_keeps_shape_range_and_is_a_shifted_window() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 6, 6, generator=g)
    out = augment_batch(x, "crop-flip", generator=torch.Generator().manual_seed(1), pad=2)
    again = augment_batch(x, "crop-flip", generator=torch.Generator().manual_seed(1), pad=2)
    assert out.shape == x.shape and out.dtype == x.dtype and torch.equal(out, again)
    assert out.min() >= 0 and out.max() <= 1
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(len(x)):
        windows = [padded[i, :, dy : dy + 6, dx : dx + 6] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(2)) for w in windows)
    assert torch.equal(augment_batch(x, "crop", generator=g, pad=0), x)
    with pytest.raises(UnknownNameError, match="did you mean 'crop-flip'"):
        augment_batch(x, "crop-flp", generator=g)


def test_schedules_set_the_learning_rate(digits: tuple[torch.Tensor, ...]) -> None:
    x_tr, y_tr = digits[0][:256], digits[1][:256]
    lrs = {}
    for schedule in SCHEDULES.names():
        history = train(_fresh(), x_tr, y_tr, SGD.replace(epochs=4, batch_size=64, lr=0.05, schedule=schedule))
        lrs[schedule] = [h["lr"] for h in history]
    assert lrs["none"] == [0.05] * 4
    assert lrs["step"] == pytest.approx([0.05, 0.05, 0.005, 0.0005])
    assert lrs["cosine"][0] == 0.05 and lrs["cosine"][1] < 0.05
    assert lrs["onecycle"][0] < 0.05


def test_checkpoint_is_written_each_epoch(digits: tuple[torch.Tensor, ...], tmp_path: Path) -> None:
    x_tr, y_tr = digits[0][:200], digits[1][:200]
    model = _fresh()
    train(model, x_tr, y_tr, SGD.replace(epochs=2, batch_size=64), checkpoint=tmp_path / "ck")
    loaded, info = load_model(tmp_path / "ck.safetensors")
    assert info["epoch"] == 2 and len(info["history"]) == 2
    assert torch.equal(loaded(x_tr[:8]), model(x_tr[:8]))


def test_bad_inputs_raise_typed_errors(digits: tuple[torch.Tensor, ...]) -> None:
    x, y = digits[0][:64], digits[1][:64]
    model = _fresh()
    cases = [
        (dict(x_train=x, y_train=y[:10]), InputError, "as many training labels"),
        (dict(x_train=x[:, 0], y_train=y), InputError, r"\(N, C, H, W\)"),
        (dict(x_train=x * 2, y_train=y), InputError, r"in \[0, 1\]"),
        (dict(x_train=x, y_train=y + 10), InputError, "labels below"),
        (dict(x_train=x, y_train=y, x_val=x), InputError, "both"),
        (dict(x_train=x, y_train=y, settings=TrainSettings(epochs=0)), InputError, "epochs"),
        (dict(x_train=x, y_train=y, settings=TrainSettings(optimizer="sgdd")), UnknownNameError, "did you mean 'sgd'"),
        (dict(x_train=x, y_train=y, settings=TrainSettings(schedule="cosin")), UnknownNameError, "known: cosine"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            train(model, **kwargs)  # type: ignore[arg-type]


def test_evaluate_accuracy_restores_mode(digits: tuple[torch.Tensor, ...]) -> None:
    x, y = digits[2][:50], digits[3][:50]
    model = _fresh().train()
    with torch.no_grad():
        expected = (model.eval()(x).argmax(1) == y).float().mean().item()
    model.train()
    assert evaluate_accuracy(model, x, y, batch_size=7) == pytest.approx(expected)
    assert model.training
