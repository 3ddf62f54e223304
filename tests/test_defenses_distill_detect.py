"""Defensive distillation and detectors (feature squeezing, binary detector, DetectorGuard) on digits."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import SGD, tiny_cnn
from sparring.attacks import fgsm, pgd
from sparring.data import load_dataset
from sparring.defenses import DEFENSES
from sparring.defenses.detection import (
    DetectorGuard,
    FeatureSqueezing,
    detection_rate_at_fpr,
    roc_auc,
    threshold_at_fpr,
)
from sparring.defenses.detector import DETECTOR_TRAINING, BinaryDetector, train_detector
from sparring.defenses.distillation import Temperature, distill, soft_labels
from sparring.defenses.preprocess import BitDepth, MedianBlur
from sparring.errors import InputError, UnknownNameError
from sparring.rng import SampleGenerators
from sparring.threat import Norm, ThreatModel
from sparring.training import TrainSettings, evaluate_accuracy, train

THREAT = ThreatModel(Norm.LINF, 0.1)
DISTILL = TrainSettings(batch_size=128, lr=1e-3, epochs=10)  # distill's defaults before TrainSettings


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits")
    return ds.x_train, ds.y_train, ds.x_test, ds.y_test


@pytest.fixture(scope="module")
def base(digits):
    """tiny_cnn trained normally (T = 1): about 97% test accuracy."""
    x, y, _, _ = digits
    net = tiny_cnn()
    train(net, x, y, SGD.replace(epochs=15, batch_size=64, optimizer="adam", lr=1e-2, weight_decay=0.0))
    return net


@pytest.fixture(scope="module")
def distilled(digits):
    x, y, _, _ = digits
    return distill(tiny_cnn(), x, y, temperature=20, settings=DISTILL.replace(epochs=20, batch_size=64, lr=2e-2))


@pytest.fixture(scope="module")
def pgd_test(base, digits):
    _, _, xt, yt = digits
    return pgd(base, xt, yt, threat=THREAT, steps=10, generator=SampleGenerators(7, range(len(xt))))


def _error_rate(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(1) != y).float().mean())


def _ce_grad_norms(model, x, y):
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
    return grad.flatten(1).norm(dim=1)


# ---------------------------------------------------------------- defensive distillation


def test_student_matches_teacher_and_saturates_at_t1(distilled, base, digits):
    _, _, xt, yt = digits
    student, info = distilled
    acc_s, acc_t = evaluate_accuracy(student, xt, yt), evaluate_accuracy(info["teacher"], xt, yt)
    assert acc_s >= 0.9 and acc_s >= acc_t - 0.03  # seen: student 0.951, teacher 0.962, base 0.969
    assert info["temperature"] == 20.0 and len(info["teacher_history"]) == len(info["student_history"]) == 20
    assert info["student_history"][-1]["train_accuracy"] > 0.95
    with torch.no_grad():
        top = F.softmax(student(xt), dim=1).amax(1)
    assert float((top > 0.99).float().mean()) > 0.9  # seen: 0.996 (teacher 0.980, base 0.607)
    g_student, g_base = _ce_grad_norms(student, xt, yt), _ce_grad_norms(base, xt, yt)
    assert float(g_student.median()) < 1e-3 * float(g_base.median())  # seen: 0 vs 4.8e-2
    assert float((g_student == 0).float().mean()) > 0.5 and float((g_base == 0).float().mean()) < 0.05  # 0.77 vs 0


def test_ce_fgsm_is_masked_margin_and_temperature_are_not(distilled, digits):
    _, _, xt, yt = digits
    student, info = distilled
    ce = _error_rate(student, fgsm(student, xt, yt, threat=THREAT, loss="ce"), yt)
    margin = _error_rate(student, fgsm(student, xt, yt, threat=THREAT, loss="margin"), yt)
    hot = _error_rate(student, fgsm(Temperature(student, 20), xt, yt, threat=THREAT, loss="ce"), yt)
    assert ce < margin - 0.15  # seen: ce 0.291, margin 0.567, CE at T 0.569 (base: 0.46 / 0.48)
    assert hot > margin - 0.1  # CE on logits / T (Carlini & Wagner 2016) recovers the attack


def test_soft_labels_and_temperature_module(distilled, digits):
    student, _ = distilled
    x = digits[0][:50]
    p = soft_labels(student, x, temperature=20)
    assert p.shape == (50, 10) and torch.allclose(p.sum(1), torch.ones(50), atol=1e-5)
    assert torch.allclose(p, F.softmax(student(x) / 20, dim=1), atol=1e-6)
    assert float(p.amax(1).mean()) < float(soft_labels(student, x, temperature=1).amax(1).mean())
    assert torch.allclose(Temperature(student, 4)(x), student(x) / 4)


def test_distill_is_seeded_leaves_rng_and_model_alone_and_is_registered(digits):
    x, y = digits[0][:256], digits[1][:256]
    proto = tiny_cnn()
    before = copy.deepcopy(proto.state_dict())
    state = torch.get_rng_state()
    runs = [distill(proto, x, y, temperature=10, settings=DISTILL.replace(epochs=1, batch_size=64), seed=s)[0]
            for s in (3, 3, 4)]
    flat = [torch.cat([p.flatten() for p in m.parameters()]) for m in runs]
    assert torch.equal(flat[0], flat[1]) and not torch.equal(flat[0], flat[2])
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(v, proto.state_dict()[k]) for k, v in before.items())
    built = [distill(lambda: tiny_cnn(seed=int(torch.randint(100, ()))), x, y, settings=DISTILL.replace(epochs=1),
                     seed=5)[0] for _ in range(2)]
    assert torch.equal(built[0](x[:4]), built[1](x[:4]))
    meta = DEFENSES.meta("distillation")
    assert DEFENSES.get("distillation").target is distill
    assert (meta["kind"], meta["differentiable"], meta["random"], meta["params"]) == ("training", True, False,
                                                                                      {"temperature": 20})
    assert "1511.04508" in meta["paper"]


@pytest.mark.parametrize("kwargs,match", [
    (dict(temperature=0), "temperature"), (dict(temperature=float("nan")), "temperature"),
    (dict(temperature=True), "temperature"), (dict(settings=TrainSettings(epochs=0)), "epochs"),
    (dict(student_epochs=-1), "student_epochs"),
    (dict(model="cnn"), "nn.Module or a model builder"), (dict(x=torch.rand(8, 64)), r"\(N, C, H, W\)"),
    (dict(y=torch.arange(7)), "as many"), (dict(settings=TrainSettings(lr=-1.0)), "lr"),
])  # fmt: skip
def test_distill_bad_inputs_are_one_line_errors(kwargs, match):
    args = {"model": tiny_cnn(), "x": torch.rand(8, 1, 8, 8), "y": torch.arange(8)}
    args.update({k: kwargs.pop(k) for k in ("model", "x", "y") if k in kwargs})
    with pytest.raises(InputError, match=match) as err:
        distill(args["model"], args["x"], args["y"], **kwargs)
    assert "\n" not in str(err.value) and "expected" in str(err.value)


# ---------------------------------------------------------------- feature squeezing


def test_feature_squeezing_separates_pgd_and_fgsm_and_fits_the_fpr(base, digits, pgd_test):
    _, _, xt, yt = digits
    # A 3x3 median rewrites 8x8 digits (clean score 0.52 on average, AUC 0.64-0.72 for the default
    # pair); bit depth 3 is the squeezer that suits this data.
    fs = FeatureSqueezing(base, [BitDepth(3)])
    clean = fs.scores(xt)
    for x_adv, floor in ((pgd_test, 0.9), (fgsm(base, xt, yt, threat=THREAT), 0.85)):
        adv = fs.scores(x_adv)
        assert float(adv.mean()) > 3 * float(clean.mean())  # seen: 0.35 (PGD), 0.25 (FGSM) vs 0.018
        assert roc_auc(clean, adv) > floor  # seen: 0.974 (PGD), 0.949 (FGSM)
    threshold = fs.fit_threshold(xt, fpr=0.05)
    assert fs.threshold == threshold
    rate = float(fs.detect(xt).float().mean())
    assert 0.04 <= rate <= 0.05  # seen: 0.049
    assert torch.equal(fs.detect(xt), clean > threshold)
    assert detection_rate_at_fpr(clean, fs.scores(pgd_test)) > 0.6  # seen: 0.85


def test_feature_squeezing_default_pair_score_and_bpda(base, digits):
    x = digits[2][:32]
    fs = FeatureSqueezing(base)
    assert [type(s) for s in fs.squeezers] == [BitDepth, MedianBlur]
    assert (fs.squeezers[0].bits, fs.squeezers[1].window) == (5, 3)
    with torch.no_grad():
        p = F.softmax(base(x), 1)
        manual = torch.stack([(p - F.softmax(base(s(x)), 1)).abs().sum(1) for s in fs.squeezers]).amax(0)
        assert torch.allclose(fs.score(x), manual) and float(fs.score(x).max()) <= 2
    assert not fs.differentiable and fs.for_attack().differentiable
    attackable = fs.for_attack()
    assert torch.allclose(attackable.score(x), fs.score(x), atol=1e-6)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(attackable.score(xg).sum(), xg)
    assert float(grad.abs().sum()) > 0
    meta = DEFENSES.meta("feature-squeezing")
    assert DEFENSES.get("feature-squeezing").target is FeatureSqueezing
    assert (meta["kind"], meta["differentiable"], meta["random"]) == ("detector", False, False)
    assert "1704.01155" in meta["paper"]


# ---------------------------------------------------------------- binary detector


def test_binary_detector_detects_held_out_pgd_and_is_seeded(base, digits, pgd_test):
    x, y, xt, _ = digits
    kw = dict(threat=THREAT, attack="pgd", attack_params={"steps": 10}, settings=DETECTOR_TRAINING.replace(epochs=5, lr=1e-2),
              seed=1)
    weights = copy.deepcopy(base.state_dict())
    det = train_detector(base, x, y, **kw)
    clean, adv = det.scores(xt), det.scores(pgd_test)
    assert roc_auc(clean, adv) >= 0.9  # seen: 0.996 (held-out test split)
    assert bool(((clean >= 0) & (clean <= 1)).all())
    assert len(det.history) == 5 and not det.training and det.threshold is None
    again = train_detector(base, x, y, attack_batch_size=100, **kw)  # per-sample generators: same set
    assert torch.equal(again.scores(xt[:64]), det.scores(xt[:64]))
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in weights.items())  # the classifier is untouched
    meta = DEFENSES.meta("binary-detector")
    assert (meta["kind"], meta["differentiable"], meta["random"]) == ("detector", True, False)
    assert "1702.04267" in meta["paper"]


def test_binary_detector_on_a_layer_and_gradient_reaches_the_input(base, digits, pgd_test):
    x, y, xt, _ = digits
    det = train_detector(base, x[:600], y[:600], threat=THREAT, attack="fgsm", layer="0",
                         settings=DETECTOR_TRAINING.replace(epochs=10, lr=3e-3))
    assert det.model is base and det.layer == "0"
    assert roc_auc(det.scores(xt), det.scores(pgd_test)) > 0.9  # trained on FGSM, tested on PGD; seen: 0.978
    xg = xt[:8].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(det(xg).sum(), xg)
    assert float(grad.abs().sum()) > 0


# ---------------------------------------------------------------- metrics


def test_roc_auc_and_detection_rate_on_hand_made_scores():
    assert roc_auc([0.1, 0.4], [0.35, 0.8]) == pytest.approx(0.75)  # sklearn's documented example
    assert roc_auc(torch.tensor([0.0, 0.1]), torch.tensor([0.5, 0.9])) == 1.0
    assert roc_auc([0.5, 0.9], [0.0, 0.1]) == 0.0 and roc_auc([0.3, 0.3], [0.3]) == 0.5
    clean = torch.arange(100.0)
    assert threshold_at_fpr(clean, 0.05) == 95.0 and threshold_at_fpr(clean, 0.0) == 99.0
    assert detection_rate_at_fpr(clean, [50.0, 96.0, 99.0, 200.0], fpr=0.05) == 0.75
    assert detection_rate_at_fpr(clean, [99.0], fpr=0.0) == 0.0
    for bad, match in (([], "non-empty"), ([[0.1, 0.2]], "1-D"), ([float("nan")], "finite")):
        with pytest.raises(InputError, match=match):
            roc_auc(bad, [0.5])
    with pytest.raises(InputError, match=r"fpr to be a number in \[0, 1\)"):
        detection_rate_at_fpr([0.1], [0.2], fpr=1.0)


# ---------------------------------------------------------------- DetectorGuard


class _Fixed(nn.Module):
    """Logits independent of x but for a shift; used to test the guard's construction exactly."""

    def __init__(self, logits):
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits))

    def forward(self, x):
        return self.logits.expand(len(x), -1) + x.flatten(1).mean(1, keepdim=True)


class _MeanDetector(BinaryDetector):
    """score = sigmoid(10 * (mean(x) - 0.5)): flags bright images."""

    def __init__(self):
        super().__init__(nn.Identity(), threshold=0.5)

    def forward(self, x):
        return 10 * (x.flatten(1).mean(1) - 0.5)


def test_guard_rejects_flagged_inputs_for_any_logit_sign_and_passes_gradients():
    x = torch.cat([torch.full((2, 1, 4, 4), 0.2), torch.full((2, 1, 4, 4), 0.8)])
    for logits in ([2.0, 5.0, 1.0], [-9.0, -3.0, -4.0]):  # the product form (Z_D + 1) max Z fails for < 0
        guard = DetectorGuard(_Fixed(logits), _MeanDetector())
        out = guard(x)
        assert out.shape == (4, 4)
        assert guard.predict(x).tolist() == [1, 1, 3, 3]
        assert torch.equal(out[:, :3], guard.model(x))
        assert guard.fooled(x, torch.tensor([0, 1, 0, 1])).tolist() == [True, False, False, False]
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(guard(xg)[:, 3].sum(), xg)
    assert float(grad.abs().sum()) > 0 and guard.differentiable and guard.for_attack() is guard
    assert DetectorGuard(_Fixed([2.0, 5.0, 1.0]), _MeanDetector(), threshold=0.999).predict(x).tolist() == [1] * 4


def test_guard_with_feature_squeezing_uses_bpda_and_a_targeted_attack_runs(base, digits):
    xt, yt = digits[2][:40], digits[3][:40]
    fs = FeatureSqueezing(base, [BitDepth(3)])
    fs.fit_threshold(digits[2])
    guard = DetectorGuard(base, fs)
    assert not guard.differentiable and guard.for_attack().differentiable
    flagged = fs.detect(xt)
    assert torch.equal(guard.predict(xt) == 10, flagged)
    targets = (yt + 1) % 10
    x_adv = pgd(guard.for_attack(), xt, targets, threat=THREAT, steps=10, targeted=True, loss="margin",
                generator=SampleGenerators(0, range(40)))
    assert float(THREAT.distance(x_adv, xt).max()) <= 0.1 + 1e-6
    fooled = guard.fooled(x_adv, yt)
    assert torch.equal(fooled, (base(x_adv).argmax(1) != yt) & ~fs.detect(x_adv))


# ---------------------------------------------------------------- validation


def test_detector_bad_inputs_are_one_line_errors(base, digits):
    x, y = digits[0][:16], digits[1][:16]
    cases = [
        (lambda: FeatureSqueezing("model"), InputError, "nn.Module"),
        (lambda: FeatureSqueezing(base, [BitDepth(3)], bits=4), InputError, "squeezers or bits/window"),
        (lambda: FeatureSqueezing(base, window=2), InputError, "odd integer"),
        (lambda: FeatureSqueezing(base).detect(x), InputError, "fit_threshold"),
        (lambda: FeatureSqueezing(base, threshold=0.1).score(x[:, 0]), InputError, r"\(N, C, H, W\)"),
        (lambda: FeatureSqueezing(base, threshold=float("inf")), InputError, "threshold"),
        (lambda: BinaryDetector(nn.Identity(), model=base, layer="9"), InputError, "submodule"),
        (lambda: BinaryDetector(nn.Identity(), model=base), InputError, "both"),
        (lambda: train_detector(base, x, y, threat=THREAT, attack="pgdd"), UnknownNameError, "did you mean"),
        (lambda: train_detector(base, x, y, threat=THREAT, attack_params={"threat": THREAT}), InputError, "threat"),
        (lambda: train_detector(base, x, y, threat=0.1), InputError, "ThreatModel"),
        (lambda: train_detector(base, x, y[:3], threat=THREAT), InputError, "as many"),
        (lambda: DetectorGuard(base, FeatureSqueezing(base)), InputError, "threshold"),
        (lambda: DetectorGuard(base, nn.Identity()), InputError, "detector"),
    ]
    for make, error, match in cases:
        with pytest.raises(error, match=match) as err:
            make()
        assert "\n" not in str(err.value)
