"""Devices: asking for CUDA without it is a one-line error (never a silent CPU fallback); on a CUDA
machine the GPU paths run and agree with the CPU (these tests skip with a reason elsewhere)."""

from __future__ import annotations

import json

import pytest
import torch

from sparring.cli import main
from sparring.experiment import resolve_device

NO_CUDA = not torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(NO_CUDA, reason="needs a CUDA GPU (this machine has none)")


@pytest.mark.skipif(not NO_CUDA, reason="checks the error on a machine without CUDA")
@pytest.mark.parametrize("command", [
    ["evaluate", "--dataset", "digits", "--model", "digits-cnn", "--device", "cuda"],
    ["train", "--dataset", "digits", "--model", "digits-cnn", "--epochs", "1", "--device", "cuda:0"],
    ["run", "configs/study-a-cifar10.toml"],  # the config asks for device = "cuda"
])
def test_cuda_without_a_gpu_is_a_one_line_error(command, capsys, tmp_path):
    assert main([*command, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sees no CUDA device" in err
    assert not (tmp_path / "x").exists()  # nothing was started on the CPU instead


def test_device_names():
    assert resolve_device("cpu") == "cpu" and resolve_device("auto") == ("cuda" if not NO_CUDA else "cpu")
    with pytest.raises(Exception, match="expected device auto, cpu, cuda or cuda:N, got 'tpu'"):
        resolve_device("tpu")


@needs_cuda
def test_gpu_evaluation_agrees_with_cpu(tmp_path, capsys):
    model = tmp_path / "m"
    assert main(["train", "--dataset", "digits", "--model", "digits-cnn", "--epochs", "3", "--device", "cuda",
                 "--out", str(model)]) == 0
    results = {}
    for device in ("cpu", "cuda"):
        capsys.readouterr()
        assert main(["evaluate", "--dataset", "digits", "--model", str(model.with_suffix(".safetensors")),
                     "--attack", "pgd:steps=10", "--attack", "deepfool", "--eps", "0.1", "--device", device,
                     "--json"]) == 0
        results[device] = json.loads(capsys.readouterr().out)
    assert abs(results["cpu"]["clean_accuracy"] - results["cuda"]["clean_accuracy"]) <= 0.005
    assert results["cpu"]["attacks"].keys() == results["cuda"]["attacks"].keys() == {"pgd", "deepfool"}
    for attack, cells in results["cpu"]["attacks"].items():  # float rounding may flip a few samples
        assert abs(cells["0.1"] - results["cuda"]["attacks"][attack]["0.1"]) <= 0.01, attack


@needs_cuda
def test_gpu_evaluation_repeats_exactly(tmp_path):
    """IEEE float32 and deterministic kernels (sparring.precision.exact_float32): a minimal attack run twice on
    the GPU gives the same per-sample results, as a torchrun job must."""
    records = []
    for run in ("a", "b"):
        assert main(["evaluate", "--dataset", "digits", "--model", "digits-cnn", "--attack", "deepfool", "--attack",
                     "pgd:steps=10", "--eps", "0.1", "--device", "cuda", "--out", str(tmp_path / run)]) == 0
        lines = (tmp_path / run / "results.jsonl").read_text().splitlines()
        records.append([{k: v for k, v in json.loads(line).items() if k != "time_s"} for line in lines])
    assert records[0] == records[1]


@needs_cuda
def test_run_on_a_gpu_trains_evaluates_audits_and_reports(tmp_path):
    """The whole `sparring run` on CUDA: the model trained on the GPU is checked, attacked and audited there."""
    assert main(["run", "--device", "cuda", "--out", str(tmp_path / "r")]) == 0
    records = [json.loads(line) for line in (tmp_path / "r" / "results.jsonl").read_text().splitlines()]
    assert next(r for r in records if r["kind"] == "clean")["accuracy"] > 0.9
    assert next(r for r in records if r["kind"] == "audit")["verdict"] in ("pass", "warn")
    assert (tmp_path / "r" / "report.html").exists()
    assert json.loads((tmp_path / "r" / "manifest.json").read_text())["device"] == "cuda"


@needs_cuda
@pytest.mark.parametrize("detector", ["binary-detector:epochs=2,train=300", "reconstruction-detector:epochs=2,train=300"])
def test_trained_detectors_on_a_gpu(tmp_path, detector):
    """The detectors trained by `sparring detect` on CUDA (the binary detector's training set once mixed a
    GPU and a CPU tensor: found on an H100)."""
    model = tmp_path / "m"
    assert main(["train", "--dataset", "digits", "--model", "digits-cnn", "--epochs", "3", "--device", "cuda",
                 "--out", str(model)]) == 0
    assert main(["detect", "--dataset", "digits", "--model", str(model.with_suffix(".safetensors")), "--detector",
                 detector, "--attack", "pgd:steps=5", "--eps", "0.1", "--n", "60", "--device", "cuda"]) == 0
