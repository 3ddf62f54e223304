"""Speed opt-ins: mixed-precision training (bf16 / fp16 autocast), channels_last and torch.compile train to
the same accuracy as fp32; attacks stay float32 unless asked, and a reduced-precision attack is noted."""

from __future__ import annotations

import json
import shutil
import tomllib

import pytest
import torch

from sparring.cli import main
from sparring.config import config_from_dict
from sparring.data import load_dataset
from sparring.errors import ConfigError, InputError
from sparring.experiment import run_experiment
from sparring.models import build_model
from sparring.training import TrainSettings, check_settings, evaluate_accuracy, train


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _trained(ds, **options) -> tuple[float, torch.nn.Module]:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model("digits-cnn", num_classes=10, in_channels=1, mean=ds.mean, std=ds.std)
    settings = TrainSettings(epochs=4, batch_size=128, optimizer="adam", lr=2e-3, weight_decay=5e-4, **options)
    history = train(model, ds.x_train, ds.y_train, settings, seed=0)
    assert len(history) == 4 and history[-1]["loss"] < history[0]["loss"]
    return evaluate_accuracy(model, ds.x_test, ds.y_test), model


@pytest.mark.slow
@pytest.mark.parametrize("options", [{"precision": "bf16"}, {"precision": "fp16"}, {"channels_last": True}])
def test_opt_ins_train_as_well_as_fp32(digits, options):
    base, _ = _trained(digits)
    accuracy, model = _trained(digits, **options)
    assert abs(accuracy - base) <= 0.03, (options, accuracy, base)
    assert all(p.dtype == torch.float32 and p.is_contiguous() for p in model.parameters())  # saved as usual


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile's inductor needs a C++ compiler, and this machine has none")
@pytest.mark.slow
def test_compile_trains(digits):
    pytest.importorskip("torch._inductor")
    accuracy, _ = _trained(digits, compile=True)  # a compiler is here: any failure is a failure
    assert accuracy > 0.85


def test_bad_precision_is_a_one_line_error():
    with pytest.raises(InputError, match="expected precision fp32, bf16 or fp16, got 'fp8'"):
        check_settings(TrainSettings(precision="fp8"))
    with pytest.raises(ConfigError, match="train.precision must be"):
        config_from_dict({"train": {"precision": "half"}})


@pytest.mark.slow
def test_reduced_precision_attacks_are_recorded_and_noted_by_the_audit(tmp_path):
    config = config_from_dict(tomllib.loads(
        '[data]\nn = 40\n[train]\nepochs = 2\nprecision = "bf16"\n[evaluate]\neps = ["0.1"]\nprecision = "bf16"\n'
        '[audit]\nn = 20\nsteps = 5\nsquare_queries = 20\n[[attacks]]\nname = "pgd"\nsteps = 5\n'))
    run_experiment(config, tmp_path / "run", progress=False)
    records = {r["cell"]: r for r in map(json.loads, (tmp_path / "run" / "results.jsonl").read_text().splitlines())}
    assert records["pgd|linf|0.1"]["precision"] == "bf16"
    note = next(c for c in records["audit"]["checks"] if c["name"] == "attack precision")
    assert note["status"] == "warn" and records["audit"]["verdict"] in ("warn", "fail")


@pytest.mark.slow
def test_cli_flags(tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["train", "--dataset", "digits", "--epochs", "2", "--precision", "bf16", "--channels-last",
                 "--out", str(out)]) == 0
    assert main(["evaluate", "--dataset", "digits", "--model", str(out.with_suffix(".safetensors")), "--attack",
                 "fgsm", "--eps", "0.1", "--attack-precision", "bf16", "--json"]) == 0
    assert "fgsm" in json.loads(capsys.readouterr().out.splitlines()[-1])["attacks"]


def test_exact_float32_sets_ieee_and_deterministic_kernels_on_cuda_only_and_restores():
    from sparring.precision import _tf32_switches, exact_float32

    before = [getattr(obj, name) for obj, name, _ in _tf32_switches()]
    flags = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    with exact_float32("cpu"):  # nothing changes for the CPU
        assert [getattr(obj, name) for obj, name, _ in _tf32_switches()] == before
    with exact_float32("cuda"):  # the flags are process settings; they can be set without a GPU
        assert all(getattr(obj, name) == value for obj, name, value in _tf32_switches())
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert [getattr(obj, name) for obj, name, _ in _tf32_switches()] == before
    assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == flags
