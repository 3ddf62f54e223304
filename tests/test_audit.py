"""The gradient-masking audit on planted broken defenses (each must fail a check that names the cause,
and the adaptive re-run must land near the honest number) and on a model it must pass."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from conftest import SGD
from sparring.cli import main
from sparring.data import load_dataset
from sparring.defenses import distill
from sparring.errors import InputError
from sparring.evaluate.audit import audit
from sparring.evaluate.masking import StraightThrough, attackable, zero_gradient_layers
from sparring.evaluate.planted import KillGradient, Quantize, planted
from sparring.models import build_model, save_model
from sparring.threat import Norm, ThreatModel
from sparring.training import TrainSettings, train

THREAT = ThreatModel(Norm.LINF, 0.1)
FAST = dict(eps=[0.05, 0.1], steps=10, square_queries=60, eot_draws=4)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _net(ds, seed=0):
    torch.manual_seed(seed)
    return build_model("digits-cnn", num_classes=10, in_channels=1, mean=ds.mean, std=ds.std)


@pytest.fixture(scope="module")
def net(digits):
    model = _net(digits)
    train(model, digits.x_train, digits.y_train, SGD.replace(epochs=8, optimizer="adam", lr=2e-3), seed=0)
    return model.eval()


@pytest.fixture(scope="module")
def data(digits):
    return digits.x_test[:50], digits.y_test[:50]


@pytest.fixture(scope="module")
def plain(net, data):
    return audit(net, *data, threat=THREAT, **FAST)


def _failed(report):
    return {c["name"]: c for c in report["checks"] if c["status"] == "fail"}


def test_straight_through_and_zero_gradient_layers(net, data):
    x = data[0][:4]
    assert zero_gradient_layers(nn.Sequential(Quantize(4), net), x) == ["0"]
    assert zero_gradient_layers(nn.Sequential(KillGradient(), net), x) == ["0"]
    assert zero_gradient_layers(net, x) == []
    xg = x.clone().requires_grad_(True)
    layer = StraightThrough(Quantize(4))
    assert torch.equal(layer(xg), Quantize(4)(x))
    (g,) = torch.autograd.grad(layer(xg).sum(), xg)
    assert torch.equal(g, torch.ones_like(x))
    model, changes = attackable(nn.Sequential(Quantize(4), net), x)
    assert isinstance(model[0], StraightThrough) and "0 (Quantize)" in changes[0]


def test_plain_model_passes(plain):
    assert plain["verdict"] in ("pass", "warn") and not _failed(plain)
    assert plain["naive"][0.05] >= plain["naive"][0.1]
    if plain["adaptive"] is not None:  # a convergence warning asks for more steps and restarts: a small change
        assert plain["adaptive"][0.1] >= plain["naive"][0.1] - 0.1


def test_naive_restarts_set_the_convergence_check(net, data):
    report = audit(net, *data, threat=THREAT, **{**FAST, "eps": [0.1]}, restarts=2)
    check = next(c for c in report["checks"] if c["name"] == "convergence")
    assert "PGD-20 x 4 restarts" in check["evidence"] and "for PGD-10 x 2 restarts" in check["evidence"]
    with pytest.raises(InputError, match="restarts to be an integer >= 1, got 0"):
        audit(net, *data, threat=THREAT, **FAST, restarts=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gradient-killer", "quantization"])
def test_hidden_gradients_fail_and_bpda_recovers(name, net, data, plain):
    report = audit(planted(name, net), *data, threat=THREAT, **FAST)
    failed = _failed(report)
    assert report["verdict"] == "fail" and "input gradients" in failed
    assert "0 (" in failed["input gradients"]["evidence"]  # names the layer
    assert report["naive"][0.1] > plain["naive"][0.1] + 0.2  # looks robust to the naive attack
    assert any("identity" in c for c in report["changes"])
    bound = 0.05 if name == "gradient-killer" else 0.25  # quantization does remove small perturbations
    assert report["adaptive"][0.1] <= plain["naive"][0.1] + bound


@pytest.mark.slow
def test_noise_layer_fails_randomness_and_gets_eot(net, data):
    report = audit(planted("noise", net), data[0][:30], data[1][:30], threat=THREAT, **FAST)
    assert "randomness" in _failed(report) and any("EOT" in c for c in report["changes"])
    assert report["adaptive"][0.1] < report["naive"][0.1]


def test_median_filter_fails_declared_non_differentiable(net, data):
    report = audit(planted("median", net), *data, threat=THREAT, **FAST)
    assert "non-differentiable layers" in _failed(report)
    assert any("declared surrogates" in c for c in report["changes"])


@pytest.mark.slow
def test_distillation_saturates_and_the_margin_loss_recovers(digits, data):
    student, _ = distill(lambda: _net(digits, 1), digits.x_train, digits.y_train, temperature=100,
                         settings=TrainSettings(epochs=10, batch_size=128, lr=2e-3), seed=0)
    report = audit(student.eval(), *data, threat=THREAT, **FAST)
    failed = _failed(report)
    assert "input gradients" in failed and "saturated" in failed["input gradients"]["cause"]
    assert "loss margin" in report["changes"]
    assert report["adaptive"][0.1] < report["naive"][0.1] - 0.1


def test_cli_audit_exit_codes_and_json(tmp_path, capsys, net):
    path = tmp_path / "net"
    save_model(net, path, meta={"dataset": "digits"})
    base = ["audit", "--model", str(path), "--eps", "0.1", "--n", "30", "--steps", "5", "--square-queries", "30"]
    assert main([*base, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["verdict"] in ("pass", "warn")
    assert main([*base, "--planted", "quantization", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["verdict"] == "fail" and report["adaptive"]["0.1"] < report["naive"]["0.1"]
    assert main([*base, "--planted", "nope"]) == 2
    assert "planted defense" in capsys.readouterr().err
    assert main([*base, "--defense", "pgd-at"]) == 2


@pytest.mark.slow
def test_run_records_the_audit_and_the_report_shows_it(tmp_path, capsys):
    config = tmp_path / "median.toml"
    config.write_text('name = "median"\n[data]\nn = 40\n[train]\nepochs = 3\n[evaluate]\neps = ["0.05", "0.1"]\n'
                      '[[attacks]]\nname = "pgd"\nsteps = 5\n[[defenses]]\nname = "median-blur"\n'
                      '[audit]\nn = 30\nsteps = 5\nsquare_queries = 30\n')
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out)]) == 0
    lines = (out / "results.jsonl").read_text().splitlines()
    audits = [json.loads(line) for line in lines if json.loads(line)["kind"] == "audit"]
    assert len(audits) == 1 and audits[0]["verdict"] == "fail" and audits[0]["defense"] == "median-blur"
    assert any(c["name"] == "non-differentiable layers" and c["status"] == "fail" for c in audits[0]["checks"])
    assert set(audits[0]["naive"]) == {"0.05", "0.1"} and set(audits[0]["adaptive"]) == {"0.05", "0.1"}
    html = (out / "report.html").read_text()
    assert "Audit: digits-cnn / median-blur" in html and "FAIL" in html and "adaptive robust %" in html
    assert main(["run", str(config), "--out", str(out)]) == 0  # resumed: the audit is not redone
    assert (out / "results.jsonl").read_text().splitlines() == lines
    off = tmp_path / "off.toml"
    off.write_text(config.read_text().replace("[audit]\n", "[audit]\nenabled = false\n"))
    assert main(["run", str(off), "--out", str(tmp_path / "off")]) == 0
    assert "audit" not in (tmp_path / "off" / "results.jsonl").read_text()
