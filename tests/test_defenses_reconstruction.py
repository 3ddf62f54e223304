"""MagNet-style reconstruction (arXiv:1705.09064): denoising autoencoder, reformer, detector, on digits."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import SGD, tiny_cnn
from sparring.attacks import fgsm, pgd
from sparring.data import load_dataset
from sparring.defenses import DEFENSES
from sparring.defenses.bpda import Defended, bpda, is_differentiable, is_random
from sparring.defenses.detection import roc_auc
from sparring.defenses.reconstruction import (
    AUTOENCODER_TRAINING,
    ReconstructionDetector,
    Reformer,
    build_autoencoder,
    train_autoencoder,
)
from sparring.errors import InputError
from sparring.rng import SampleGenerators
from sparring.threat import Norm, ThreatModel
from sparring.training import evaluate_accuracy, train

ONE = AUTOENCODER_TRAINING.replace(epochs=1)


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits")
    return ds.x_train, ds.y_train, ds.x_test, ds.y_test


@pytest.fixture(scope="module")
def base(digits):
    """tiny_cnn trained normally: about 97% test accuracy."""
    x, y, _, _ = digits
    net = tiny_cnn()
    train(net, x, y, SGD.replace(epochs=15, batch_size=64, optimizer="adam", lr=1e-2, weight_decay=0.0))
    return net


@pytest.fixture(scope="module")
def trained(digits):
    x, _, xt, _ = digits
    return train_autoencoder(x, noise=0.1, settings=AUTOENCODER_TRAINING.replace(epochs=20, batch_size=64, lr=1e-2),
                             seed=0, x_val=xt)


@pytest.fixture(scope="module")
def attacked(base, digits):
    """Non-adaptive examples crafted on the bare classifier: {(name, eps): x_adv}."""
    _, _, xt, yt = digits
    out = {}
    for eps in (0.2, 0.3):
        threat = ThreatModel(Norm.LINF, eps)
        out["fgsm", eps] = fgsm(base, xt, yt, threat=threat)
        out["pgd", eps] = pgd(base, xt, yt, threat=threat, steps=10, generator=SampleGenerators(7, range(len(xt))))
    return out


def test_autoencoder_reconstructs_clean_digits(trained, base, digits):
    _, _, xt, yt = digits
    ae, history = trained
    assert len(history) == 20 and "train_accuracy" not in history[0]
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]  # seen: 0.0668 -> 0.0045 (noisy inputs)
    with torch.no_grad():
        rec = ae(xt)
    mse = float((rec - xt).square().mean())
    assert mse < 0.005 and history[-1]["val_mse"] == pytest.approx(mse, rel=1e-4)  # seen: 0.00149
    assert float(rec.min()) >= 0 and float(rec.max()) <= 1 and not ae.training
    clean, reformed = evaluate_accuracy(base, xt, yt), evaluate_accuracy(Defended(Reformer(ae), base), xt, yt)
    assert clean > 0.9 and reformed >= clean - 0.04  # seen: clean 0.969, reformed 0.958


def test_detector_separates_fgsm_and_pgd(trained, attacked, digits):
    _, _, xt, _ = digits
    det = ReconstructionDetector(trained[0], p=1)
    clean = det.scores(xt)
    threshold = det.fit_threshold(xt, fpr=0.05)
    assert det.threshold == threshold and float(det.detect(xt).float().mean()) <= 0.05
    for key, x_adv in attacked.items():
        adv = det.scores(x_adv)
        assert float(adv.mean()) > 1.5 * float(clean.mean()), key  # seen: 0.026 clean, 0.055-0.072 adv
        assert roc_auc(clean, adv) > 0.7, key  # seen: AUC 0.99996-1.0 for FGSM/PGD at eps 0.2 and 0.3
        assert float(det.detect(x_adv).float().mean()) > 0.5, key
    det2 = ReconstructionDetector(trained[0], p=2)
    assert roc_auc(det2.scores(xt), det2.scores(attacked["pgd", 0.2])) > 0.7


def test_reformer_helps_only_against_non_adaptive_attacks(trained, base, attacked, digits):
    _, _, xt, yt = digits
    defended = Defended(Reformer(trained[0]), base)
    assert defended.for_attack() is defended and is_differentiable(defended) and not is_random(defended)
    x_adv = attacked["pgd", 0.2]
    bare, reformed = evaluate_accuracy(base, x_adv, yt), evaluate_accuracy(defended, x_adv, yt)
    assert reformed > bare + 0.3  # seen: PGD eps 0.2: bare 0.009, reformed 0.789 (FGSM: 0.051 -> 0.231)
    x_ada = pgd(defended.for_attack(), xt, yt, threat=ThreatModel(Norm.LINF, 0.2), steps=10,
                generator=SampleGenerators(7, range(len(xt))))  # fmt: skip
    adaptive = evaluate_accuracy(defended, x_ada, yt)
    assert adaptive <= reformed and adaptive < reformed - 0.3  # seen: adaptive 0.12 vs non-adaptive 0.789


def test_gradients_flow(trained, base, digits):
    _, _, xt, yt = digits
    ae = trained[0]
    x = xt[:16].clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(Defended(bpda(Reformer(ae)), base)(x), yt[:16])
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(grad).all() and float(grad.abs().sum()) > 0
    score = ReconstructionDetector(ae)(xt[:16] + 0.1).sum()
    grads = torch.autograd.grad(score, list(ae.parameters()))
    assert all(torch.isfinite(g).all() for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


def test_training_is_deterministic_with_seed(digits):
    x = digits[0][:160]
    kw = dict(settings=AUTOENCODER_TRAINING.replace(epochs=2, batch_size=32, lr=1e-2), width=4)
    a, ha = train_autoencoder(x, seed=3, **kw)
    b, hb = train_autoencoder(x, seed=3, **kw)
    c, _ = train_autoencoder(x, seed=4, **kw)
    assert [r["loss"] for r in ha] == [r["loss"] for r in hb]
    for (name, pa), pb, _pc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not all(torch.equal(pa, pc) for pa, pc in zip(a.state_dict().values(), c.state_dict().values()))
    d, hd = train_autoencoder(x, seed=3, noise=0.0, **kw)
    assert hd[0]["loss"] != ha[0]["loss"]  # the noise changes the loss


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_shapes_for_mnist_and_cifar(shape):
    torch.manual_seed(0)
    ae = build_autoencoder(shape, width=4)
    assert any(isinstance(m, nn.AvgPool2d) for m in ae)  # pooled for the larger images
    x = torch.rand(5, *shape)
    with torch.no_grad():
        out = Reformer(ae)(x)
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert ReconstructionDetector(ae).scores(x).shape == (5,)
    trained, history = train_autoencoder(x, settings=AUTOENCODER_TRAINING.replace(epochs=1, batch_size=4), width=4)
    assert trained(x).shape == x.shape and len(history) == 1
    assert not any(isinstance(m, nn.AvgPool2d) for m in build_autoencoder((1, 8, 8)))


def test_registered_with_flags():
    meta = DEFENSES.meta("autoencoder")
    assert DEFENSES.get("autoencoder").target is train_autoencoder
    assert (meta["kind"], meta["differentiable"], meta["random"], meta["params"]) == (
        "preprocess", True, False, {"noise": 0.1, "width": 16, "epochs": 20, "lr": 1e-3})
    assert "1705.09064" in meta["paper"]
    meta = DEFENSES.meta("reconstruction-detector")
    assert DEFENSES.get("reconstruction-detector").target is ReconstructionDetector
    assert (meta["kind"], meta["differentiable"], meta["random"]) == ("detector", True, False)
    assert Reformer(nn.Identity()).surrogate() is not None and Reformer.differentiable and not Reformer.random


def test_bad_arguments_give_one_line_errors(digits):
    x = digits[0][:8]
    ae = build_autoencoder((1, 8, 8), width=2)
    det = ReconstructionDetector(ae)
    bad = [
        lambda: build_autoencoder((8, 8)),
        lambda: build_autoencoder((1, 0, 8)),
        lambda: build_autoencoder((1, 8, 8), width=0),
        lambda: build_autoencoder((1, 9, 9), pool=True),
        lambda: train_autoencoder(x, noise=-0.1, settings=ONE),
        lambda: train_autoencoder(x[:, 0], settings=ONE),
        lambda: train_autoencoder(x, autoencoder=build_autoencoder((3, 8, 8)), settings=ONE),
        lambda: train_autoencoder(x, x_val=torch.rand(2, 1, 9, 9), settings=ONE),
        lambda: Reformer(ae)(torch.rand(2, 3, 8, 8)),
        lambda: Reformer(nn.AvgPool2d(2))(x),
        lambda: Reformer("ae"),  # type: ignore[arg-type]
        lambda: ReconstructionDetector(ae, p=0),
        lambda: det.fit_threshold(x, fpr=0.0),
        lambda: det.fit_threshold(x, fpr=1.0),
        lambda: det.detect(x),  # no threshold yet
    ]
    for i, call in enumerate(bad):
        with pytest.raises(InputError) as info:
            call()
        message = str(info.value)
        assert "\n" not in message and "expected" in message, (i, message)
