"""Models: registry, Normalize, option-A shortcuts, third-party weights, checkpoint IO safety."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sparring import load_model
from sparring.errors import ConfigError, DataError, InputError, UnknownNameError
from sparring.models import (
    MODELS,
    PRETRAINED,
    Normalize,
    Normalized,
    build_model,
    load_pretrained,
    load_weights,
    save_model,
)


def _weights_dir() -> Path | None:
    from sparring.paths import find_weights_dir

    try:
        folder = find_weights_dir()
    except DataError:  # SPARRING_WEIGHTS names a missing folder
        return None
    return folder if folder is not None and any(folder.glob("*.th")) else None


def _data_file(name: str) -> Path | None:
    from sparring.paths import find_data_dir

    try:
        folder = find_data_dir()
    except DataError:
        return None
    return folder / name if folder is not None and (folder / name).is_file() else None


needs_weights = pytest.mark.skipif(_weights_dir() is None, reason="no weights folder (SPARRING_WEIGHTS / ../shared/weights)")


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_maps_images_to_logits(name: str) -> None:
    meta = MODELS.meta(name)
    torch.manual_seed(0)
    model = build_model(name).eval()
    assert isinstance(model, Normalized) and model.arch == name
    x = torch.rand(2, *meta["input_shape"])
    with torch.inference_mode():
        out = model(x)
    assert out.shape == (2, meta["num_classes"]) and torch.isfinite(out).all()
    assert {"input_shape", "num_classes", "mean", "std", "description"} <= set(meta)


def test_build_model_options_and_errors() -> None:
    model = build_model("resnet20", num_classes=3)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 3)
    assert model.arch_kwargs == {"num_classes": 3, "in_channels": 3} and model.num_classes == 3
    gray = build_model("cifar-cnn", in_channels=1, mean=(0.5,), std=(0.25,), widths=(8, 16, 32), hidden=16)
    assert gray(torch.rand(2, 1, 32, 32)).shape == (2, 10)
    with pytest.raises(UnknownNameError, match="did you mean 'lenet5'"):
        build_model("lenet-5")
    with pytest.raises(ConfigError, match="does not take option"):
        build_model("lenet5", depth=3)
    with pytest.raises(ConfigError, match="pass mean= and std="):
        build_model("resnet20", in_channels=1)


def test_normalize_math() -> None:
    norm = Normalize((0.5, 0.25, 0.0), (0.5, 0.25, 2.0))
    x = torch.rand(4, 3, 5, 5)
    expected = torch.stack([(x[:, 0] - 0.5) / 0.5, (x[:, 1] - 0.25) / 0.25, x[:, 2] / 2.0], dim=1)
    torch.testing.assert_close(norm(x), expected)
    assert norm.state_dict() == {}  # non-persistent buffers
    assert torch.equal(Normalize((0.5,), (0.5,))(torch.ones(1, 3, 2, 2)), torch.ones(1, 3, 2, 2))
    with pytest.raises(InputError, match="std > 0"):
        Normalize((0.0,), (0.0,))
    with pytest.raises(InputError, match="expected images of shape"):
        norm(torch.rand(1, 1, 4, 4))
    net = nn.Flatten()
    wrapped = Normalized(net, (0.5, 0.25, 0.0), (0.5, 0.25, 2.0))
    torch.testing.assert_close(wrapped(x), net(expected))


def test_cifar_cnn_has_noise_slots_and_two_dropouts() -> None:
    net = build_model("cifar-cnn").net
    assert isinstance(net.noise1, nn.Identity) and isinstance(net.noise2, nn.Identity)
    assert sum(isinstance(m, nn.Dropout) for m in net.modules()) == 2
    model = build_model("cifar-cnn").eval()
    x = torch.rand(2, 3, 32, 32)
    before = model(x)
    model.net.noise2 = nn.Dropout(0.0)  # a slot accepts any module
    torch.testing.assert_close(model(x), before)


def test_resnet_option_a_shortcut_pads_channels_on_both_sides() -> None:
    block = build_model("resnet20").net.layer2[0]
    x = torch.rand(1, 16, 8, 8)
    out = block.shortcut(x)
    assert out.shape == (1, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0


@needs_weights
@pytest.mark.parametrize("alias", PRETRAINED.names())
def test_pretrained_weights_load_strictly_and_classify(alias: str) -> None:
    spec = PRETRAINED.get(alias)
    model = load_pretrained(alias)
    assert not model.training and model.arch == spec.arch
    data = _data_file("mnist.npz" if spec.dataset == "mnist" else "cifar10.npz")
    if data is None:
        pytest.skip(f"{spec.dataset} test images not found (SPARRING_DATA / ../shared/data)")
    with np.load(data) as arrays:
        x, y = arrays["x_test"][:200], arrays["y_test"][:200]
    x = torch.tensor(x, dtype=torch.float32) / 255
    x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)
    with torch.inference_mode():
        accuracy = (model(x).argmax(1) == torch.tensor(y).long()).float().mean().item()
    assert accuracy >= (0.95 if spec.dataset == "mnist" else 0.85), accuracy


def test_load_pretrained_missing_file_says_where_and_how(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError, match="akamaster_resnet20-12fca82f.th, not found in .*SPARRING_WEIGHTS"):
        load_pretrained("resnet20-akamaster", weights_dir=tmp_path)
    (tmp_path / "advertorch_mnist_lenet5_clntrained.pt").write_bytes(b"not the real file")
    with pytest.raises(DataError, match="sha256"):
        load_pretrained("lenet5-advertorch-clean", weights_dir=tmp_path)
    import sparring.paths

    monkeypatch.delenv("SPARRING_WEIGHTS", raising=False)
    monkeypatch.setattr(sparring.paths, "find_weights_dir", lambda explicit=None, **_: None)
    with pytest.raises(DataError, match="no weights folder was found.*--weights-dir"):
        load_pretrained("lenet5-advertorch-clean")


def test_save_load_round_trip_is_exact(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=7)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    model.eval()
    weights, sidecar = save_model(model, tmp_path / "sub" / "net.v1", meta={"dataset": "cifar10", "accuracy": 0.5})
    assert weights.name == "net.v1.safetensors" and sidecar.name == "net.v1.json"
    assert sorted(p.name for p in weights.parent.iterdir()) == ["net.v1.json", "net.v1.safetensors"]
    x = torch.rand(3, 3, 32, 32)
    for path in (weights, sidecar, tmp_path / "sub" / "net.v1"):
        loaded, info = load_model(path)
        assert info["dataset"] == "cifar10" and info["arch"] == "resnet20" and info["num_classes"] == 7
        assert torch.equal(loaded(x), model(x))
    with pytest.raises(InputError, match="reserved"):
        save_model(model, tmp_path / "x", meta={"arch": "other"})
    with pytest.raises(InputError, match="build_model"):
        save_model(Normalized(nn.Flatten(), (0.0,), (1.0,)), tmp_path / "custom")
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(DataError, match="does not match"):
        load_model(weights)


def test_load_weights_accepts_common_layouts(tmp_path: Path) -> None:
    source = build_model("lenet5").eval()
    bare = source.net.state_dict()
    layouts = {"plain.pt": bare, "wrapped.pth": {"state_dict": {f"module.{k}": v for k, v in bare.items()}},
                "model.th": {"model": bare, "epoch": 3}, "whole.pt": source.state_dict()}  # fmt: skip
    x = torch.rand(2, 1, 28, 28)
    for name, obj in layouts.items():
        torch.save(obj, tmp_path / name)
        target = load_weights(build_model("lenet5").eval(), tmp_path / name)
        assert torch.equal(target(x), source(x)), name


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"echo hacked > {self.marker}",))


def test_bad_checkpoints_raise_data_error_and_run_nothing(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    torch.save(build_model("lenet5").net.state_dict(), good)
    marker = tmp_path / "hacked.txt"
    (tmp_path / "truncated.pt").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / "random.safetensors").write_bytes(np.random.default_rng(1).bytes(4096))
    torch.save({"conv1.weight": _Evil(marker)}, tmp_path / "evil_zip.pt")
    (tmp_path / "evil_raw.pt").write_bytes(pickle.dumps(_Evil(marker), protocol=2))
    cases = {"truncated.pt": "truncated or not a checkpoint", "random.pt": "truncated or not a checkpoint",
             "random.safetensors": "truncated or not a checkpoint", "evil_zip.pt": "pickled code",
             "evil_raw.pt": "pickled code", "absent.pt": "not found"}  # fmt: skip
    for name, message in cases.items():
        with pytest.raises(DataError, match=message) as info:
            load_weights(build_model("lenet5"), tmp_path / name)
        assert "\n" not in str(info.value)
    assert not marker.exists()


def test_wrong_architecture_names_missing_keys(tmp_path: Path) -> None:
    path = tmp_path / "lenet.pt"
    torch.save(build_model("lenet5").net.state_dict(), path)
    with pytest.raises(DataError, match=r"does not fit resnet20: missing keys bn1\.weight.*\(\+\d+ more\)"):
        load_weights(build_model("resnet20"), path)
    torch.save(build_model("resnet20").net.state_dict(), path)
    with pytest.raises(DataError, match=r"shape mismatch linear\.weight \(10, 64\) vs \(5, 64\)"):
        load_weights(build_model("resnet20", num_classes=5), path)


@needs_weights
def test_third_party_file_copied_under_another_name_still_loads(tmp_path: Path) -> None:
    folder = _weights_dir()
    assert folder is not None
    copy = tmp_path / "r20.th"
    shutil.copy(folder / "akamaster_resnet20-12fca82f.th", copy)
    model = load_weights(build_model("resnet20"), copy)
    assert isinstance(model, Normalized)
