"""The command line as a user runs it: outputs, the run folder, resume, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sparring.cli import main


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model") / "digits"
    assert main(["train", "--dataset", "digits", "--model", "digits-cnn", "--epochs", "3", "--out", str(out)]) == 0
    return out.with_suffix(".safetensors")


def _error(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sparring: error: ") and "Traceback" not in err, err
    return lines[0]


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("digits", "cifar10", "resnet20", "lenet5", "pgd", "iterative-l2", "resnet20-akamaster", "median-blur",
                 "randomized-smoothing", "pgd-at"):
        assert name in out


def test_evaluate_json(capsys, digits_model):
    argv = ["evaluate", "--dataset", "digits", "--model", str(digits_model), "--attack", "fgsm",
            "--attack", "pgd:steps=5,restarts=2", "--eps", "0.1,8/255", "--n", "80", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dataset"] == "digits" and out["n"] == 80 and 0.8 < out["clean_accuracy"] <= 1
    assert set(out["attacks"]) == {"fgsm", "pgd"} and set(out["attacks"]["pgd"]) == {"0.1", "8/255"}
    pgd, fgsm = out["attacks"]["pgd"], out["attacks"]["fgsm"]
    assert pgd["0.1"] <= fgsm["0.1"] + 0.05 and pgd["8/255"] >= pgd["0.1"]
    assert out["worst_case"]["linf"]["0.1"] <= min(pgd["0.1"], fgsm["0.1"])
    cell = next(c for c in out["cells"] if c["attack"] == "pgd" and c["eps_label"] == "0.1")
    assert cell["forward"] > 0 and cell["backward"] > 0 and cell["norms"]["linf"]["max"] <= 0.1 + 1e-6


@pytest.mark.slow
def test_run_folder_and_resume(tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text('name = "tiny"\n[data]\nn = 60\n[train]\nepochs = 2\n[evaluate]\neps = ["0.1", "0.2"]\n'
                      '[[attacks]]\nname = "fgsm"\n[[attacks]]\nname = "pgd"\nsteps = 3\n')
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out)]) == 0
    for name in ("config.toml", "manifest.json", "results.jsonl", "report.md", "report.html", "model.safetensors"):
        assert (out / name).is_file(), name
    assert list((out / "adversarial").glob("*.pt"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["dataset"]["sha256"] and manifest["torch"]
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 1 + 4 + 2 + 1  # clean, cells, worst cases, the audit
    # a kill in the middle of writing: three whole records and half of the fourth survive
    (out / "results.jsonl").write_text("\n".join(lines[:3]) + "\n" + lines[3][:40])
    assert main(["run", str(config), "--out", str(out)]) == 0
    again = (out / "results.jsonl").read_text().splitlines()
    assert again[:3] == lines[:3] and len(again) == len(lines)
    assert {json.loads(a)["cell"] for a in again} == {json.loads(a)["cell"] for a in lines}
    config.write_text(config.read_text().replace("steps = 3", "steps = 4"))
    assert "different config" in _error(capsys, ["run", str(config), "--out", str(out)])


def test_bad_names_and_numbers(capsys, digits_model):
    model = str(digits_model)
    assert "did you mean 'pgd'" in _error(capsys, ["evaluate", "--model", model, "--attack", "pdg", "--eps", "0.1"])
    assert "eps must be >= 0" in _error(capsys, ["evaluate", "--model", model, "--attack", "pgd", "--eps", "-0.1"])
    assert "unknown model" in _error(capsys, ["evaluate", "--model", "resnet21", "--eps", "0.1"])
    assert "unknown dataset" in _error(capsys, ["evaluate", "--model", model, "--dataset", "mnits"])
    assert "steps" in _error(capsys, ["evaluate", "--model", model, "--attack", "pgd:steps=0", "--eps", "0.1", "--n", "10"])
    assert "no parameter" in _error(capsys, ["evaluate", "--model", model, "--attack", "pgd:alpha=1", "--eps", "0.1"])
    assert "norm" in _error(capsys, ["evaluate", "--model", model, "--attack", "fgv:norm=l2", "--eps", "0.1"])
    assert "--n" in _error(capsys, ["evaluate", "--model", model, "--n", "100000"])
    assert "invalid choice" in _error(capsys, ["fly"])


def test_bad_inputs_files(tmp_path, capsys, digits_model):
    model = str(digits_model)
    cases = {
        "shape": (np.random.rand(4, 1, 28, 28).astype(np.float32), np.zeros(4, dtype=np.int64), "does not accept"),
        "bounds": (np.full((4, 1, 8, 8), 2.0, dtype=np.float32), np.zeros(4, dtype=np.int64), "[0, 1]"),
        "nan": (np.full((4, 1, 8, 8), np.nan, dtype=np.float32), np.zeros(4, dtype=np.int64), "NaN"),
        "labels": (np.random.rand(4, 1, 8, 8).astype(np.float32), np.full(4, 42, dtype=np.int64), "labels in [0, 9]"),
        "count": (np.random.rand(4, 1, 8, 8).astype(np.float32), np.zeros(3, dtype=np.int64), "labels"),
    }
    for name, (x, y, fragment) in cases.items():
        path = tmp_path / f"{name}.npz"
        np.savez(path, x=x, y=y)
        assert fragment in _error(capsys, ["evaluate", "--model", model, "--inputs", str(path), "--attack", "fgsm", "--eps", "0.1"])


def test_truncated_and_malicious_checkpoints(tmp_path, capsys, digits_model):
    data = digits_model.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    (tmp_path / "cut.json").write_text(digits_model.with_suffix(".json").read_text())
    assert "truncated" in _error(capsys, ["evaluate", "--model", str(cut), "--eps", "0.1"])
    pt = tmp_path / "cut.pt"
    pt.write_bytes(b"PK\x03\x04" + b"\x00" * 50)
    assert str(pt) in _error(capsys, ["evaluate", "--model", "digits-cnn", "--weights", str(pt), "--eps", "0.1"])


def test_untargeted_run_of_an_attack_whose_default_is_targeted(capsys, digits_model):
    argv = ["evaluate", "--model", str(digits_model), "--attack", "iterative-l2:steps=200,step_size=0.05",
            "--norm", "l2", "--eps", "2", "--n", "40", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    cell = out["cells"][0]
    assert cell["params"]["targeted"] is False and cell["attack_success_rate"] > 0.9


def test_fooling_images_from_noise(tmp_path, capsys, digits_model):
    import torch

    out = tmp_path / "fool"
    argv = ["fool", "--dataset", "digits", "--model", str(digits_model), "--classes", "0,3,7", "--confidence",
            "0.9", "--steps", "300", "--out", str(out)]
    assert main(argv) == 0
    assert "3/3 images reached the goal" in capsys.readouterr().out
    saved = torch.load(out / "fooling.pt", weights_only=True)
    assert saved["images"].shape == (3, 1, 8, 8) and saved["targets"].tolist() == [0, 3, 7]
    assert float(saved["probs"].gather(1, saved["targets"][:, None]).min()) >= 0.9
    assert (out / "fooling.png").stat().st_size > 1000
    line = _error(capsys, ["fool", "--dataset", "digits", "--model", str(digits_model), "--classes", "0,10"])
    assert "0..9" in line and "0,10" in line


@pytest.mark.slow
def test_run_config_defenses_train_wrap_and_resume(tmp_path, capsys):
    from sparring import load_model
    from sparring.defenses import Defended, GaussianBlur

    config = tmp_path / "def.toml"
    config.write_text('name = "def"\n[data]\nn = 40\n[train]\nepochs = 2\n[evaluate]\neps = ["0.1"]\n'
                      '[[attacks]]\nname = "pgd"\nsteps = 3\n'
                      '[[defenses]]\nname = "pgd-at"\neps = "0.1"\nsteps = 2\n'
                      '[[defenses]]\nname = "gaussian-blur"\nsigma = 1.0\n')
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "with pgd-at" in err
    model, meta = load_model(out / "model.safetensors")
    assert isinstance(model, Defended) and isinstance(model.preprocess, GaussianBlur)
    assert [d["name"] for d in meta["defense"]] == ["pgd-at", "gaussian-blur"]
    assert "adversarial_fraction" in meta["history"][0]
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r.get("defense") for r in records if "defense" in r} == {"pgd-at+gaussian-blur"}
    assert main(["run", str(config), "--out", str(out)]) == 0  # resume: loads the defended model, nothing redone
    assert "loaded the model trained earlier" in capsys.readouterr().err
    assert [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()] == records
    bad = tmp_path / "bad.toml"
    bad.write_text('[model]\narch = "digits-cnn"\nweights = "x.safetensors"\n[[defenses]]\nname = "pgd-at"\n'
                   'eps = "0.1"\n')
    assert "leave model.weights empty" in _error(capsys, ["run", str(bad), "--out", str(tmp_path / "b")])


@pytest.mark.slow
def test_defend_pgd_at_saves_and_evaluates(tmp_path, capsys):
    out = tmp_path / "pgd"
    argv = ["defend", "--dataset", "digits", "--model", "digits-cnn", "--defense", "pgd-at:steps=3", "--eps", "0.1",
            "--epochs", "2", "--out", str(out)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert len([line for line in captured.err.splitlines() if line.startswith("epoch ")]) == 2
    saved = out.with_suffix(".safetensors")
    assert captured.out.strip().endswith(f"-> {saved}")
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["defense"] == [{"name": "pgd-at", "params": {"mix": 0.0, "steps": 3}, "eps": "0.1", "norm": "linf"}]
    assert f"test accuracy {100 * meta['test_accuracy']:.2f}%" in captured.out and len(meta["history"]) == 2
    assert main(["evaluate", "--model", str(saved), "--attack", "pgd:steps=5", "--eps", "0.1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["clean_accuracy"] == pytest.approx(meta["test_accuracy"], abs=1e-9)
    assert 0 <= result["attacks"]["pgd"]["0.1"] <= result["clean_accuracy"]


def test_defend_blur_is_rebuilt_on_load(tmp_path, capsys):
    from sparring import load_model
    from sparring.defenses import Defended, GaussianBlur
    from sparring.models import Normalized

    out = tmp_path / "blur"
    argv = ["defend", "--model", "digits-cnn", "--defense", "gaussian-blur:sigma=1", "--epochs", "2", "--out", str(out)]
    assert main(argv) == 0
    capsys.readouterr()
    model, meta = load_model(out.with_suffix(".safetensors"))
    assert isinstance(model, Defended) and isinstance(model.preprocess, GaussianBlur)
    assert model.preprocess.sigma == 1.0 and isinstance(model.model, Normalized)
    assert meta["defense"] == [{"name": "gaussian-blur", "params": {"sigma": 1}}]
    assert main(["evaluate", "--model", str(out.with_suffix(".safetensors")), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["clean_accuracy"] == pytest.approx(meta["test_accuracy"], abs=1e-9)


@pytest.mark.slow
def test_defend_ensemble_at_takes_saved_surrogates(tmp_path, capsys, digits_model):
    out = tmp_path / "ens"
    argv = ["defend", "--model", "digits-cnn", "--defense", f"ensemble-at:surrogates={digits_model},eps_warmup=1",
            "--eps", "0.1", "--epochs", "1", "--out", str(out)]
    assert main(argv) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["defense"][0]["name"] == "ensemble-at" and meta["defense"][0]["params"]["surrogates"] == str(digits_model)
    assert meta["history"][0]["adversarial_fraction"] == pytest.approx(0.5, abs=0.02)
    capsys.readouterr()
    # a bare architecture is trained first (seed + 1), as Tramer et al.'s static pre-trained models
    assert main(["defend", "--model", "digits-cnn", "--defense", "ensemble-at:surrogates=digits-cnn",
                 "--eps", "0.1", "--epochs", "1", "--out", str(tmp_path / "ens2")]) == 0
    assert "training the static surrogate digits-cnn" in capsys.readouterr().err


def test_defend_bad_names_and_params(tmp_path, capsys):
    out = str(tmp_path / "x")
    assert "did you mean 'gaussian-blur'" in _error(capsys, ["defend", "--defense", "gausian-blur", "--out", out])
    line = _error(capsys, ["defend", "--defense", "gaussian-blur:radius=2", "--out", out])
    assert "radius" in line and "sigma" in line
    assert "sparring detect" in _error(capsys, ["defend", "--defense", "feature-squeezing", "--out", out])
    line = _error(capsys, ["defend", "--defense", "randomized-smoothing:radius=1", "--out", out])
    assert "radius" in line and "sigma" in line
    assert "at most one autoencoder" in _error(capsys, ["defend", "--defense", "autoencoder", "--defense",
                                                        "autoencoder:width=8", "--out", out])
    assert "surrogate" in _error(capsys, ["defend", "--defense", "ensemble-at", "--out", out])
    assert "--eps" in _error(capsys, ["defend", "--defense", "pgd-at", "--out", out])
    assert "at most one" in _error(capsys, ["defend", "--defense", "pgd-at", "--defense", "trades", "--eps", "0.1",
                                            "--out", out])
    assert "--defense" in _error(capsys, ["defend", "--out", out])
