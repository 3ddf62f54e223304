"""Resumable training: a run interrupted after epoch k and resumed ends with the weights and history of
an uninterrupted run (library, recipes' hook state, CLI, `sparring run`, torchrun); mismatched settings
and unsafe state files are refused with one-line errors."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import SGD, logged
from sparring import load_model
from sparring.cli import main
from sparring.data import load_dataset
from sparring.errors import ConfigError, DataError, InputError
from sparring.models import build_model
from sparring.threat import Norm, ThreatModel
from sparring.training import OPTIMIZERS, SCHEDULES, TrainSettings, state_path, train

SRC = str(Path(__file__).resolve().parent.parent / "src")


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    ds = load_dataset("digits")
    return ds.x_train[:240], ds.y_train[:240]


def _fresh(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("digits-cnn", num_classes=10, in_channels=1)


def _stop_at(epoch: int, prefix: str = "") -> Any:
    """Interrupts training as the epoch's line is logged, before its state is written."""
    return logged(stop=f"{prefix}epoch {epoch}/")


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _timeless(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "time_s"} for r in history]


def _saved_epoch(stem: Path) -> int:
    return int(torch.load(state_path(stem), weights_only=True)["epoch"])


@pytest.mark.parametrize("optimizer", OPTIMIZERS.names())
@pytest.mark.parametrize("schedule", SCHEDULES.names())
def test_resumed_training_equals_uninterrupted(digits, tmp_path, optimizer, schedule):
    x, y = digits
    settings = SGD.replace(epochs=3, batch_size=48, optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 2e-3,
                           schedule=schedule, augment="crop-flip", pad=1)
    kw = dict(settings=settings, seed=5, x_val=x[:50], y_val=y[:50])
    whole = _fresh()
    expected = train(whole, x, y, **kw)
    with pytest.raises(KeyboardInterrupt), _stop_at(3):
        train(_fresh(), x, y, checkpoint=tmp_path / "m", **kw)
    assert _saved_epoch(tmp_path / "m") == 2  # killed in epoch 3: its state was not written
    resumed = _fresh(seed=7)  # other initial weights: everything comes from the state file
    with logged() as lines:
        history = train(resumed, x, y, checkpoint=tmp_path / "m", resume=True, **kw)
    assert lines[0] == f"resumed from {state_path(tmp_path / 'm')} after epoch 2/3"
    assert [h["epoch"] for h in history] == [1, 2, 3] and _timeless(history) == _timeless(expected)
    assert _same_weights(resumed, whole) and not resumed.training
    loaded, info = load_model(tmp_path / "m")
    assert info["epoch"] == 3 and _same_weights(loaded, whole)
    # resuming a finished run trains nothing and returns the saved history
    again = _fresh(seed=8)
    with logged() as lines:
        assert _timeless(train(again, x, y, checkpoint=tmp_path / "m", resume=True, **kw)) == _timeless(expected)
    assert lines == [f"resumed from {state_path(tmp_path / 'm')} after epoch 3/3: training had finished"]
    assert _same_weights(again, whole)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["pgd", "ensemble"])
def test_adversarial_training_resumes_its_recipe_state(digits, tmp_path, method):
    """pgd: the catastrophic-overfitting guard of epoch 3 compares with epoch 2's best robust accuracy and
    restores its weights (the recipe's `best`); ensemble: 5 batches per epoch over 3 sources, so epoch 3
    starts at source 10 % 3 = 1 (the recipe's batch counter)."""
    from sparring.defenses import adversarial_training

    x, y = digits
    extra: dict[str, Any] = {"steps": 2, "overfit_drop": 0.0} if method == "pgd" else {
        "surrogates": [_fresh(1).eval(), _fresh(2).eval()]}
    kw = dict(method=method, threat=ThreatModel(Norm.LINF, 0.1), check_size=64, check_steps=3, seed=2, **extra,
              settings=SGD.replace(epochs=3, batch_size=48, optimizer="adam", lr=0.005, weight_decay=0.0))
    whole = _fresh()
    _, expected = adversarial_training(whole, x, y, **kw)
    if method == "pgd":
        assert expected[-1].get("overfit") and expected[-1]["restored_epoch"] == 2
    with pytest.raises(KeyboardInterrupt), _stop_at(3):
        adversarial_training(_fresh(), x, y, checkpoint=tmp_path / "at", **kw)
    assert _saved_epoch(tmp_path / "at") == 2
    resumed = _fresh(seed=7)
    _, history = adversarial_training(resumed, x, y, checkpoint=tmp_path / "at", resume=True, **kw)
    assert _timeless(history) == _timeless(expected) and _same_weights(resumed, whole)
    with pytest.raises(ConfigError, match=r"^cannot resume from .*: adversarial training's eps was 0.1, got 0.2;"):
        adversarial_training(_fresh(), x, y, checkpoint=tmp_path / "at", resume=True,
                             **{**kw, "threat": ThreatModel(Norm.LINF, 0.2)})


def test_distillation_resumes_teacher_and_student(digits, tmp_path):
    from sparring.defenses import distill

    x, y = digits
    kw = dict(temperature=10.0, settings=TrainSettings(epochs=2, batch_size=48, lr=1e-3), seed=2)
    whole, _ = distill(_fresh(), x, y, **kw)
    with pytest.raises(KeyboardInterrupt), _stop_at(2, "student "):
        distill(_fresh(), x, y, checkpoint=tmp_path / "d", **kw)
    assert _saved_epoch(tmp_path / "d.teacher") == 2 and _saved_epoch(tmp_path / "d") == 1
    with logged() as lines:
        student, info = distill(_fresh(seed=7), x, y, checkpoint=tmp_path / "d", resume=True, **kw)
    assert lines[0].startswith("teacher resumed from") and lines[0].endswith("training had finished")
    assert lines[1].startswith("student resumed from") and lines[1].endswith("after epoch 1/2")
    assert _same_weights(student, whole)


@pytest.mark.parametrize("recipe", ["noise", "contrastive"])
def test_other_recipes_pass_checkpoint_and_resume_to_train(digits, tmp_path, recipe):
    from sparring.defenses import contrastive_training, noise_training

    x, y = digits

    def run(model: torch.nn.Module, **extra: Any) -> list[dict[str, Any]]:
        settings = SGD.replace(epochs=3, batch_size=48) if recipe == "noise" else \
            TrainSettings(epochs=3, batch_size=48, lr=1e-3)
        kw = dict(settings=settings, seed=4, **extra)
        if recipe == "noise":
            return noise_training(model, x, y, sigma=0.25, **kw)
        return contrastive_training(model, x, y, margin=2.0, **kw)[1]

    whole = _fresh()
    expected = run(whole)
    with pytest.raises(KeyboardInterrupt), _stop_at(3):
        run(_fresh(), checkpoint=tmp_path / "r")
    assert _saved_epoch(tmp_path / "r") == 2
    resumed = _fresh(seed=7)
    assert _timeless(run(resumed, checkpoint=tmp_path / "r", resume=True)) == _timeless(expected)
    assert _same_weights(resumed, whole)


def test_mismatched_settings_are_one_line_config_errors(digits, tmp_path):
    x, y = digits
    settings = SGD.replace(epochs=2, batch_size=48, lr=0.05)
    kw = dict(checkpoint=tmp_path / "m")
    train(_fresh(), x, y, settings, **kw)
    for change, message in [({"lr": 0.1}, "lr was 0.05, got 0.1"), ({"epochs": 3}, "epochs was 2, got 3"),
                            ({"schedule": "step"}, "schedule was 'cosine', got 'step'")]:
        with pytest.raises(ConfigError) as err:
            train(_fresh(), x, y, settings.replace(**change), resume=True, **kw)
        assert f"cannot resume from {state_path(tmp_path / 'm')}: {message};" in str(err.value)
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="train_images was 240, got 200"):
        train(_fresh(), x[:200], y[:200], settings, resume=True, **kw)
    with pytest.raises(ConfigError, match="resume=True needs checkpoint="):
        train(_fresh(), x, y, settings.replace(epochs=1), resume=True)
    with logged() as lines:
        train(_fresh(), x, y, settings, resume=True, checkpoint=tmp_path / "new")
    assert lines[0] == f"no training state at {state_path(tmp_path / 'new')}: training from scratch"


def test_checkpoint_of_a_wrapper_saves_its_network_and_bad_arguments_are_refused(digits, tmp_path):
    from sparring.defenses import Defended, GaussianBlur

    x, y = digits
    kw = dict(settings=SGD.replace(epochs=1, batch_size=48))
    blurred = Defended(GaussianBlur(1.0), _fresh())
    train(blurred, x, y, checkpoint=tmp_path / "w", **kw)
    saved, _ = load_model(tmp_path / "w")
    assert _same_weights(saved, blurred.model)
    assert set(torch.load(state_path(tmp_path / "w"), weights_only=True)["model"]) == set(blurred.state_dict())
    for model in (torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)),
                  torch.nn.Sequential(_fresh(), _fresh())):
        with pytest.raises(ConfigError, match="checkpoint= needs a model from build_model"):
            train(model, x, y, checkpoint=tmp_path / "bad", **kw)
    with pytest.raises(InputError, match="expected objective to be a sparring.training.Objective"):
        train(_fresh(), x, y, objective=object(), **kw)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="expected resume to be True or False, got 'yes'"):
        train(_fresh(), x, y, checkpoint=tmp_path / "m", resume="yes", **kw)


class _Opens:
    """Unpickling this calls open(path, "w"): code that weights_only loading must never run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def test_state_files_that_would_run_code_or_are_truncated_are_refused(digits, tmp_path):
    x, y = digits
    kw = dict(settings=SGD.replace(epochs=1, batch_size=48), checkpoint=tmp_path / "m", resume=True)
    marker = tmp_path / "pwned"
    torch.save({"format": "sparring-train-state", "model": _Opens(marker)}, state_path(tmp_path / "m"))
    with pytest.raises(DataError) as err:
        train(_fresh(), x, y, **kw)
    assert "refused by weights_only loading" in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()
    train(_fresh(), x, y, **{**kw, "resume": False})  # overwrites it with a real state
    data = state_path(tmp_path / "m").read_bytes()
    state_path(tmp_path / "m").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="is truncated or not a training state"):
        train(_fresh(), x, y, **kw)


def _cli_train(out: Path, *extra: str) -> list[str]:
    return ["train", "--dataset", "digits", "--model", "digits-cnn", "--epochs", "3", "--batch-size", "64",
            "--schedule", "onecycle", "--optimizer", "sgd", "--lr", "0.05", "--out", str(out), *extra]


@pytest.mark.slow
def test_cli_train_resume_after_an_interrupt(tmp_path, capsys):
    assert main(_cli_train(tmp_path / "whole")) == 0
    with _stop_at(3):
        assert main(_cli_train(tmp_path / "cut")) == 130
    assert _saved_epoch(tmp_path / "cut.partial") == 2
    assert not (tmp_path / "cut.safetensors").exists()  # OUT only ever holds the finished model
    capsys.readouterr()
    assert main(_cli_train(tmp_path / "cut", "--resume")) == 0
    err = capsys.readouterr().err
    assert f"resumed from {tmp_path / 'cut.partial.train-state.pt'} after epoch 2/3" in err and "epoch 3/3" in err
    whole, info_whole = load_model(tmp_path / "whole")
    cut, info_cut = load_model(tmp_path / "cut")
    assert _same_weights(cut, whole) and info_cut["test_accuracy"] == info_whole["test_accuracy"]
    assert _timeless(info_cut["history"]) == _timeless(info_whole["history"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.json", "cut.safetensors", "whole.json",
                                                          "whole.safetensors"]  # the partial files are gone
    assert main(_cli_train(tmp_path / "fresh", "--resume")) == 0
    assert "training from scratch" in capsys.readouterr().err
    assert _same_weights(load_model(tmp_path / "fresh")[0], whole)


@pytest.mark.slow
def test_cli_defend_behind_a_filter_resumes(tmp_path):
    """The model trained here is Defended(GaussianBlur, network): its state is the wrapper's."""

    def argv(out: Path, *extra: str) -> list[str]:
        return ["defend", "--model", "digits-cnn", "--defense", "gaussian-blur:sigma=1", "--epochs", "2",
                "--out", str(out), *extra]

    assert main(argv(tmp_path / "whole")) == 0
    with _stop_at(2):
        assert main(argv(tmp_path / "cut")) == 130
    assert _saved_epoch(tmp_path / "cut.partial") == 1 and not (tmp_path / "cut.safetensors").exists()
    assert main(argv(tmp_path / "cut", "--resume")) == 0
    whole, cut = load_model(tmp_path / "whole"), load_model(tmp_path / "cut")
    assert _same_weights(cut[0], whole[0]) and cut[1]["defense"] == whole[1]["defense"]


@pytest.mark.slow
def test_run_folder_resumes_training_after_an_interrupt(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text('name = "r"\n[data]\nn = 30\n[train]\nepochs = 3\n[evaluate]\neps = ["0.1"]\n'
                      '[audit]\nenabled = false\n[[variants]]\nname = "fgsm-rs"\n'
                      'defenses = [{name = "fgsm-rs-at", eps = "0.1"}]\n[[attacks]]\nname = "fgsm"\n')
    assert main(["run", str(config), "--out", str(tmp_path / "whole")]) == 0
    with _stop_at(2):
        assert main(["run", str(config), "--out", str(tmp_path / "cut")]) == 130
    state = tmp_path / "cut" / "model.train-state.pt"
    assert _saved_epoch(tmp_path / "cut" / "model") == 1 and (tmp_path / "cut" / "model.safetensors").exists()
    capsys.readouterr()
    assert main(["run", str(config), "--out", str(tmp_path / "cut")]) == 0
    assert f"resumed from {state} after epoch 1/3" in capsys.readouterr().err
    assert not state.exists()  # removed once the final model is saved: a rerun loads that model
    whole, cut = load_model(tmp_path / "whole" / "model"), load_model(tmp_path / "cut" / "model")
    assert _same_weights(cut[0], whole[0]) and _timeless(cut[1]["history"]) == _timeless(whole[1]["history"])
    assert (tmp_path / "cut" / "results.jsonl").read_text().count("\n") == 3  # clean, fgsm, worst case


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state letter) of every process, from /proc."""
    out = {}
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split() if entry.name.isdigit() else None
        except OSError:
            continue
        if fields:
            out[int(entry.name)] = (int(fields[1]), fields[0])
    return out


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants (torchrun starts each rank in a session of its own, so
    killing torchrun's process group would leave the ranks running), then wait until they are gone."""
    table, tree, todo = _processes(), [], [pid]
    while todo:
        parent = todo.pop()
        kids = [p for p, (ppid, _) in table.items() if ppid == parent]
        tree += kids
        todo += kids
    for p in [*tree, pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while any(_processes().get(p, (0, "Z"))[1] not in "ZX" for p in tree) and time.monotonic() < deadline:
        time.sleep(0.05)


def _torchrun(*args: str, kill_when: Path | None = None) -> str:
    """`torchrun --nproc-per-node 2 -m sparring ARGS`: its output, or with kill_when, SIGKILL to torchrun and
    both ranks as soon as that file appears."""
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "sparring",
           *args]
    if kill_when is None:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        return done.stdout + done.stderr
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not kill_when.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    _kill_tree(proc.pid)
    proc.wait()
    return ""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="finds torchrun's ranks in /proc")
def test_torchrun_ddp_defend_killed_and_resumed_equals_uninterrupted(tmp_path):
    argv = ["defend", "--dataset", "digits", "--model", "digits-cnn", "--defense", "fgsm-rs-at", "--eps", "0.1",
            "--epochs", "4", "--batch-size", "64", "--optimizer", "adam", "--lr", "0.002"]
    _torchrun(*argv, "--out", str(tmp_path / "whole"))
    state = tmp_path / "cut.partial.train-state.pt"
    _torchrun(*argv, "--out", str(tmp_path / "cut"), kill_when=state)  # right after rank 0's epoch-1 state
    killed_after = _saved_epoch(tmp_path / "cut.partial")
    assert 1 <= killed_after < 4, "the job finished before it was killed"
    done = _torchrun(*argv, "--out", str(tmp_path / "cut"), "--resume")
    assert f"resumed from {state} after epoch {killed_after}/4" in done
    whole, cut = load_model(tmp_path / "whole"), load_model(tmp_path / "cut")
    assert _same_weights(cut[0], whole[0])
    assert _timeless(cut[1]["history"]) == _timeless(whole[1]["history"])
    assert cut[1]["test_accuracy"] == whole[1]["test_accuracy"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (this machine has none)")
def test_resumed_training_on_a_gpu_matches_uninterrupted(digits, tmp_path):
    """On CUDA the optimizer state comes back onto the GPU and training goes on; GPU kernels need not sum in
    the same order twice, so the weights agree to float tolerance rather than bit for bit."""
    from sparring.defenses import adversarial_training

    x, y = digits
    kw = dict(method="fgsm-rs", threat=ThreatModel(Norm.LINF, 0.1), seed=3, device="cuda", x_val=x[:50],
              y_val=y[:50], settings=SGD.replace(epochs=3, batch_size=48, lr=0.05, schedule="onecycle"))
    whole = _fresh()
    _, expected = adversarial_training(whole, x, y, **kw)
    with pytest.raises(KeyboardInterrupt), _stop_at(3):
        adversarial_training(_fresh(), x, y, checkpoint=tmp_path / "m", **kw)
    resumed = _fresh(seed=7)
    _, history = adversarial_training(resumed, x, y, checkpoint=tmp_path / "m", resume=True, **kw)
    assert next(resumed.parameters()).is_cuda and [h["epoch"] for h in history] == [1, 2, 3]
    for a, b in zip(history, expected):
        assert abs(a["loss"] - b["loss"]) <= 1e-3 * b["loss"]
    for k, v in whole.state_dict().items():
        assert torch.allclose(resumed.state_dict()[k].float(), v.float(), atol=1e-3, rtol=1e-3), k
