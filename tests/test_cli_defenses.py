"""`sparring defend` for the defenses with trained parts (contrastive 1-NN, MagNet autoencoder), randomized
smoothing's base classifier with `sparring certify`, and `sparring detect` — run as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sparring import load_model
from sparring.cli import main
from sparring.data import load_dataset
from sparring.defenses import Defended, LatentNN, Reformer
from sparring.errors import DataError
from sparring.training import evaluate_accuracy


def _error(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sparring: error: "), lines
    return lines[0]


def _json(capsys, argv: list[str]) -> dict:
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("plain") / "plain"
    assert main(["train", "--dataset", "digits", "--epochs", "8", "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_contrastive_then_autoencoder_save_and_reload(tmp_path, capsys, digits):
    con, both = tmp_path / "con", tmp_path / "both"
    assert main(["defend", "--defense", "contrastive:per_class=3", "--epochs", "3", "--out", str(con)]) == 0
    model, meta = load_model(con)  # the stem works, as --out took it
    assert isinstance(model, LatentNN) and model.per_class == 3 and len(model.ref_images) == 30
    assert meta["parts_file"] == "con.parts.safetensors"
    assert evaluate_accuracy(model, digits.x_test, digits.y_test) == pytest.approx(meta["test_accuracy"])
    # on top of the saved 1-NN model: the reformer goes in front, the classifier is not retrained
    assert main(["defend", "--model", str(con), "--defense", "autoencoder:epochs=2,width=4", "--epochs", "0",
                 "--out", str(both)]) == 0
    model, meta = load_model(both)
    assert isinstance(model, LatentNN) and isinstance(model.model, Defended)
    assert isinstance(model.model.preprocess, Reformer)
    assert [d["name"] for d in meta["defense"]] == ["contrastive", "autoencoder"] and meta["defense"][1]["shape"] == [1, 8, 8]
    assert evaluate_accuracy(model, digits.x_test, digits.y_test) == pytest.approx(meta["test_accuracy"])
    x = digits.x_test[:4].clone().requires_grad_(True)
    model(x).sum().backward()  # differentiable end to end: attacks apply directly
    assert x.grad is not None and x.grad.abs().sum() > 0
    parts = tmp_path / "both.parts.safetensors"
    parts.write_bytes(parts.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(DataError, match="do not match"):
        load_model(both)
    assert main(["evaluate", "--model", str(con), "--attack", "pgd:steps=5", "--eps", "0.1", "--n", "30"]) == 0


@pytest.mark.slow
def test_run_config_trains_contrastive_and_resumes(tmp_path, capsys):
    config = tmp_path / "con.toml"
    config.write_text('name = "con"\n[data]\nn = 30\n[train]\nepochs = 2\n[evaluate]\neps = ["0.1"]\n'
                      '[[attacks]]\nname = "pgd"\nsteps = 3\n[[defenses]]\nname = "contrastive"\nper_class = 2\n')
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out)]) == 0
    records = (out / "results.jsonl").read_text()
    assert isinstance(load_model(out / "model.safetensors")[0], LatentNN)
    assert main(["run", str(config), "--out", str(out)]) == 0
    assert "loaded the model trained earlier" in capsys.readouterr().err
    assert (out / "results.jsonl").read_text() == records


@pytest.mark.slow
def test_smoothing_defend_then_certify(tmp_path, capsys, plain):
    rs = tmp_path / "rs"
    assert main(["defend", "--defense", "randomized-smoothing:sigma=0.25", "--epochs", "5", "--out", str(rs)]) == 0
    argv = ["certify", "--model", str(rs), "--n", "40", "--samples", "500", "--radii", "0,0.25,0.5"]
    report = _json(capsys, argv)
    assert report["sigma"] == 0.25 and report["images"] == 40  # sigma came from the model's training
    acc = [report["certified"][r] for r in ("0", "0.25", "0.5")]
    assert acc[0] >= 0.6 and acc[0] >= acc[1] >= acc[2]
    assert max(report["radii"]) <= report["max_radius"] + 1e-9 and report["max_radius"] == pytest.approx(
        0.25 * 2.326, rel=0.1)  # all 500 draws agreeing at alpha 0.001: Phi^-1(0.001 ** (1 / 500)) ~ 2.3
    again = _json(capsys, argv)
    assert again["classes"] == report["classes"] and again["radii"] == report["radii"]  # seeded: reproducible
    assert "--sigma is needed" in _error(capsys, ["certify", "--model", str(plain), "--n", "5"])
    assert "bare architecture" in _error(capsys, ["certify", "--model", "digits-cnn", "--sigma", "0.25"])
    assert "--radii" in _error(capsys, ["certify", "--model", str(rs), "--radii", "a,b"])


@pytest.mark.slow
def test_detect_feature_squeezing_and_binary_detector(capsys, plain):
    base = ["detect", "--model", str(plain), "--eps", "0.1", "--n", "150", "--attack", "pgd:steps=10"]
    fs = _json(capsys, [*base, "--detector", "feature-squeezing:bits=3"])
    naive, joint = fs["rows"]
    assert naive["examples"].startswith("attack on the classifier") and joint["examples"].startswith("joint")
    for row in fs["rows"]:
        assert 0 <= row["auc"] <= 1 and row["evaded"] <= 1 - row["accuracy"] + 1e-9
    assert naive["auc"] > 0.6
    det = _json(capsys, [*base, "--detector", "binary-detector:train=600,epochs=10"])
    assert det["rows"][0]["auc"] >= 0.9  # against the attack it was trained on
    assert det["rows"][1]["evaded"] > det["rows"][0]["evaded"]  # the joint attack gets past it more often
    assert "a training defense" in _error(capsys, [*base, "--detector", "pgd-at"])
    assert "does not take" in _error(capsys, [*base, "--detector", "feature-squeezing:radius=1"])
    assert "--fpr" in _error(capsys, [*base, "--fpr", "1.5"])


def test_defend_rejects_detectors_with_a_pointer(tmp_path, capsys):
    line = _error(capsys, ["defend", "--defense", "binary-detector", "--out", str(tmp_path / "x")])
    assert "sparring detect" in line


@pytest.mark.slow
def test_detection_report_does_not_depend_on_batch_size(plain, digits):
    from sparring.defenses import FeatureSqueezing
    from sparring.evaluate.detect import detection_report
    from sparring.threat import Norm, ThreatModel

    model = load_model(plain)[0]
    x, y = digits.x_test[:24], digits.y_test[:24]
    reports = [detection_report(model, FeatureSqueezing(model, bits=3), x, y, threat=ThreatModel(Norm.LINF, 0.1),
                                attack_params={"steps": 5}, batch_size=b) for b in (5, 24)]
    assert reports[0] == reports[1]
