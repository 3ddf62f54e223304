"""Tests of sparring.paths and sparring.data (synthetic files in tmp_path; real data skips)."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from sparring import paths
from sparring.data import (
    CIFAR10_CLASSES,
    DATASETS,
    Dataset,
    load_dataset,
    read_cifar_folder,
    read_idx,
    read_npz,
    require_train,
    safe_unpickle,
)
from sparring.data import mnist as mnist_module
from sparring.data.formats import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC
from sparring.data.safe_pickle import read_cifar_batch
from sparring.errors import DataError, UnknownNameError

# ---------------------------------------------------------------- helpers


def real_data_dir(filename: str) -> Path:
    """The data dir holding ``filename``, or skip the test."""
    try:
        found = paths.find_data_dir()
    except DataError as exc:
        pytest.skip(f"data dir unusable: {exc}")
    if found is None:
        pytest.skip("no data dir: set SPARRING_DATA or provide ../shared/data")
    if not (found / filename).is_file():
        pytest.skip(f"{found / filename} is absent")
    return found


def write_idx(path: Path, array: np.ndarray, magic: int, *, gz: bool) -> Path:
    """Write an idx file (big-endian header, uint8 payload), optionally gzipped."""
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if gz:
        path.write_bytes(gzip.compress(payload, compresslevel=1))
    else:
        path.write_bytes(payload)
    return path


def cifar_meta() -> dict[bytes, object]:
    return {b"label_names": [c.encode() for c in CIFAR10_CLASSES], b"num_vis": 3072}


def py2_pickle(data: np.ndarray, labels: list[int]) -> bytes:
    """A CIFAR batch as Python 2's cPickle wrote the official files: protocol 2, byte strings
    as BINSTRING, arrays through numpy.core.multiarray._reconstruct (opcodes written by hand)."""

    def text(b: bytes) -> bytes:
        return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b

    def integer(v: int) -> bytes:
        return b"J" + struct.pack("<i", v)

    dtype = (b"cnumpy\ndtype\n" + text(b"u1") + b"\x89\x88\x87R"
             + b"(K\x03" + text(b"|") + b"NNN" + integer(-1) + integer(-1) + b"K\x00tb")
    array = (b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n" + b"K\x00\x85"
             + text(b"b") + b"\x87R" + b"(K\x01" + integer(data.shape[0])
             + integer(data.shape[1]) + b"\x86" + dtype + b"\x89" + text(data.tobytes()) + b"tb")
    items = b"](" + b"".join(integer(v) for v in labels) + b"e"
    return b"\x80\x02}(" + text(b"data") + array + text(b"labels") + items + b"u."


def write_pickle(path: Path, obj: object) -> Path:
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)
    return path


# ---------------------------------------------------------------- paths


def test_known_sha256_matches_shared_sums() -> None:
    assert len(paths.KNOWN_SHA256) == 7
    sums = Path(__file__).resolve().parents[1] / ".." / "shared" / "SHA256SUMS"
    if not sums.is_file():
        pytest.skip(f"{sums} is absent")
    listed = dict(
        (Path(name).name, digest) for digest, name in
        (line.split() for line in sums.read_text().splitlines() if line.strip())
    )
    assert listed == paths.KNOWN_SHA256


def test_find_data_dir_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_dir, arg_dir = tmp_path / "env", tmp_path / "arg"
    env_dir.mkdir()
    arg_dir.mkdir()
    monkeypatch.setenv("SPARRING_DATA", str(env_dir))
    assert paths.find_data_dir(arg_dir) == arg_dir.resolve()
    assert paths.find_data_dir() == env_dir.resolve()
    monkeypatch.delenv("SPARRING_DATA")
    monkeypatch.setattr(paths, "default_data_dirs", lambda: [tmp_path / "nope", arg_dir])
    assert paths.find_data_dir() == arg_dir.resolve()
    monkeypatch.setattr(paths, "default_data_dirs", lambda: [tmp_path / "nope"])
    assert paths.find_data_dir() is None
    with pytest.raises(DataError, match="data dir .*missing does not exist"):
        paths.find_data_dir(tmp_path / "missing")
    monkeypatch.setenv("SPARRING_DATA", str(tmp_path / "gone"))
    with pytest.raises(DataError, match="SPARRING_DATA"):
        paths.find_data_dir()


def test_find_weights_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "weights").mkdir()
    monkeypatch.delenv("SPARRING_WEIGHTS", raising=False)
    assert paths.find_weights_dir(data_dir=tmp_path / "data") == (tmp_path / "weights").resolve()
    monkeypatch.setenv("SPARRING_WEIGHTS", str(tmp_path / "data"))
    assert paths.find_weights_dir() == (tmp_path / "data").resolve()
    assert paths.find_weights_dir(tmp_path / "weights") == (tmp_path / "weights").resolve()
    with pytest.raises(DataError, match="weights dir .* does not exist"):
        paths.find_weights_dir(tmp_path / "none")


def test_sha256_file_and_cache(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(b"abc" * 1000)
    assert paths.sha256_file(path) == hashlib.sha256(b"abc" * 1000).hexdigest()
    path.write_bytes(b"different and longer")  # size changes -> new cache key
    assert paths.sha256_file(path) == hashlib.sha256(b"different and longer").hexdigest()
    with pytest.raises(DataError, match="cannot read"):
        paths.sha256_file(tmp_path / "absent")


# ---------------------------------------------------------------- digits


def test_digits_shapes_ranges_and_determinism() -> None:
    ds = load_dataset("digits")
    assert ds.x_train is not None and ds.y_train is not None
    assert tuple(ds.x_train.shape) == (1347, 1, 8, 8) and tuple(ds.x_test.shape) == (450, 1, 8, 8)
    assert ds.x_test.dtype == torch.float32 and ds.y_test.dtype == torch.int64
    assert float(ds.x_train.min()) == 0.0 and float(ds.x_train.max()) == 1.0
    assert ds.input_shape == (1, 8, 8) and ds.num_classes == 10 and ds.classes[3] == "3"
    assert ds.mean[0] == pytest.approx(float(ds.x_train.mean()))
    assert ds.std[0] == pytest.approx(float(ds.x_train.std(unbiased=False)))
    assert torch.bincount(ds.y_test).min() >= 43  # stratified: ~45 per class
    again = load_dataset("digits")
    assert torch.equal(ds.x_test, again.x_test) and torch.equal(ds.y_train, require_train(again)[1])
    assert ds.sha256 == again.sha256 and len(ds.sha256) == 64
    assert "Dataset(name='digits'" in repr(ds) and "tensor" not in repr(ds)


def test_train_false_and_require_train() -> None:
    ds = load_dataset("digits", train=False)
    assert ds.x_train is None and ds.y_train is None
    with pytest.raises(DataError, match="digits: the training split is not loaded"):
        require_train(ds)
    x, y = require_train(load_dataset("digits"))
    assert len(x) == len(y) == 1347


def test_dataset_validates_its_fields() -> None:
    x, y = torch.zeros(2, 1, 4, 4), torch.tensor([0, 1])
    args = dict(name="t", classes=("a", "b"), x_train=None, y_train=None, mean=(0.5,),
                std=(0.5,), sha256="0" * 64, source="test")
    Dataset(x_test=x, y_test=y, **args)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="expected x_test float32"):
        Dataset(x_test=x.double(), y_test=y, **args)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="expected y_test int64"):
        Dataset(x_test=x, y_test=y[:1], **args)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"expected y_test in \[0, 1\], got \[0, 2\]"):
        Dataset(x_test=x, y_test=torch.tensor([0, 2]), **args)  # type: ignore[arg-type]


def test_registry_names_meta_and_unknown_name() -> None:
    assert DATASETS.names() == ["cifar10", "digits", "fashion-mnist", "mnist"]
    for name in DATASETS:
        meta = DATASETS.meta(name)
        assert meta["num_classes"] == 10 and len(meta["input_shape"]) == 3
    with pytest.raises(UnknownNameError, match="did you mean 'mnist'"):
        load_dataset("mnsit")
    with pytest.raises(UnknownNameError, match="did you mean 'fashion-mnist'"):
        load_dataset("fashion_mnist")


# ---------------------------------------------------------------- idx


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path: Path, gz: bool) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 4, 5), dtype=np.uint8)
    labels = np.array([7, 2, 1], dtype=np.uint8)
    suffix = ".gz" if gz else ""
    x = read_idx(write_idx(tmp_path / f"i{suffix}", images, IDX_IMAGES_MAGIC, gz=gz),
                 IDX_IMAGES_MAGIC)
    y = read_idx(write_idx(tmp_path / f"l{suffix}", labels, IDX_LABELS_MAGIC, gz=gz),
                 IDX_LABELS_MAGIC)
    assert np.array_equal(x, images) and np.array_equal(y, labels) and x.flags.writeable


def test_idx_bad_files(tmp_path: Path) -> None:
    images = np.zeros((3, 4, 5), dtype=np.uint8)
    bad = write_idx(tmp_path / "bad", images, 2052, gz=False)
    with pytest.raises(DataError, match="expected idx magic number 2051, got 2052"):
        read_idx(bad, IDX_IMAGES_MAGIC)
    with pytest.raises(DataError, match="magic number 2049, got 2051"):
        read_idx(write_idx(tmp_path / "i", images, IDX_IMAGES_MAGIC, gz=False), IDX_LABELS_MAGIC)
    full = write_idx(tmp_path / "full", images, IDX_IMAGES_MAGIC, gz=False).read_bytes()
    (tmp_path / "short").write_bytes(full[:-7])
    with pytest.raises(DataError, match="expected 60 data bytes .* got 53"):
        read_idx(tmp_path / "short", IDX_IMAGES_MAGIC)
    packed = gzip.compress(full)
    (tmp_path / "short.gz").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DataError, match=r"short\.gz: cannot read idx file"):
        read_idx(tmp_path / "short.gz", IDX_IMAGES_MAGIC)


def test_mnist_from_synthetic_idx_test_split(tmp_path: Path) -> None:
    folder = tmp_path / "MNIST" / "raw"
    folder.mkdir(parents=True)
    images = (np.arange(10000 * 784) % 251).astype(np.uint8).reshape(10000, 28, 28)
    labels = (np.arange(10000) % 10).astype(np.uint8)
    write_idx(folder / "t10k-images-idx3-ubyte", images, IDX_IMAGES_MAGIC, gz=False)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", labels, IDX_LABELS_MAGIC, gz=True)
    ds = load_dataset("mnist", data_dir=tmp_path)
    assert ds.x_train is None  # no train files: the caller finds out through require_train
    assert torch.equal(ds.x_test[5, 0], torch.from_numpy(images[5]).float() / 255)
    assert ds.y_test[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert "t10k-images-idx3-ubyte" in ds.source and len(ds.sha256) == 64
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        require_train(ds)
    write_idx(folder / "train-images-idx3-ubyte", images[:3], IDX_IMAGES_MAGIC, gz=False)
    write_idx(folder / "train-labels-idx1-ubyte", labels[:3], IDX_LABELS_MAGIC, gz=False)
    with pytest.raises(DataError, match=r"expected train images uint8 of shape \(60000, 28, 28\)"):
        load_dataset("mnist", data_dir=tmp_path)


# ---------------------------------------------------------------- npz


def test_npz_truncated_missing_key_and_sha_mismatch(tmp_path: Path) -> None:
    good = tmp_path / "tiny.npz"
    np.savez_compressed(good, x_test=np.zeros((4, 28, 28), np.uint8), y_test=np.arange(4))
    assert read_npz(good, ["y_test"])["y_test"].tolist() == [0, 1, 2, 3]
    with pytest.raises(DataError, match="expected an array named 'x_train', got x_test, y_test"):
        read_npz(good, ["x_train"])
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match=r"truncated\.npz: not a readable npz archive"):
        read_npz(truncated, ["x_test"])
    fake = tmp_path / "mnist.npz"  # a known name: the sha256 is checked before anything else
    fake.write_bytes(good.read_bytes())
    with pytest.raises(DataError) as info:
        load_dataset("mnist", data_dir=tmp_path)
    message = str(info.value)
    assert "expected 06af5dfe73b7… — the file is corrupt or truncated" in message
    assert message.startswith(str(fake)) and "\n" not in message


# ---------------------------------------------------------------- cifar pickles


def test_fake_cifar_folder(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    write_pickle(folder / "batches.meta", cifar_meta())
    data = np.zeros((4, 3072), dtype=np.uint8)
    data[1, :1024], data[1, 1024:2048], data[1, 2048:] = 10, 20, 30  # R, G, B planes
    data[2, 32 * 5 + 7] = 255  # red channel, row 5, column 7
    write_pickle(folder / "test_batch", {b"data": data, b"labels": [3, 1, 4, 1],
                                         b"batch_label": b"testing batch 1 of 1",
                                         b"filenames": [b"a.png"] * 4})
    x, y, files = read_cifar_folder(folder, "test", count=None)
    assert x.shape == (4, 3, 32, 32) and y.tolist() == [3, 1, 4, 1] and len(files) == 2
    assert x[1, :, 0, 0].tolist() == [10, 20, 30] and x[2, 0, 5, 7] == 255
    with pytest.raises(DataError, match="expected 10000 test images in test_batch, got 4"):
        load_dataset("cifar10", data_dir=tmp_path)
    write_pickle(folder / "test_batch", {"data": data, "labels": [3, 1, 4, 11]})  # str keys
    with pytest.raises(DataError, match=r"expected labels in \[0, 9\], got values in \[1, 11\]"):
        read_cifar_batch(folder / "test_batch")
    write_pickle(folder / "test_batch", {b"data": data[:, :100], b"labels": [3, 1, 4, 1]})
    with pytest.raises(DataError, match=r"expected data as uint8 of shape \(N, 3072\)"):
        read_cifar_batch(folder / "test_batch")


def test_cifar_folder_end_to_end(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    write_pickle(folder / "batches.meta", cifar_meta())
    data = (np.arange(10000 * 3072) % 253).astype(np.uint8).reshape(10000, 3072)
    write_pickle(folder / "test_batch", {b"data": data, b"labels": [i % 10 for i in range(10000)]})
    ds = load_dataset("cifar10", data_dir=tmp_path)
    assert tuple(ds.x_test.shape) == (10000, 3, 32, 32) and ds.x_train is None
    assert torch.equal(ds.x_test[9], torch.from_numpy(data[9].reshape(3, 32, 32)).float() / 255)
    with pytest.raises(DataError, match="data_batch_1..5"):
        require_train(ds)


def test_python2_style_cifar_pickle(tmp_path: Path) -> None:
    data = (np.arange(2 * 3072) % 256).astype(np.uint8).reshape(2, 3072)
    (tmp_path / "data_batch_1").write_bytes(py2_pickle(data, [9, 0]))
    x, y = read_cifar_batch(tmp_path / "data_batch_1")
    assert np.array_equal(x, data.reshape(2, 3, 32, 32)) and y.tolist() == [9, 0]


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    write_pickle(folder / "batches.meta", cifar_meta())
    write_pickle(folder / "test_batch", {b"data": _Exploit(marker), b"labels": [0]})
    with pytest.raises(DataError, match=r"refusing to unpickle (posix|os|nt)\.system"):
        load_dataset("cifar10", data_dir=tmp_path)
    assert not marker.exists()
    write_pickle(tmp_path / "eval.pkl", {b"x": dataclasses.replace})
    with pytest.raises(DataError, match="refusing to unpickle dataclasses.replace"):
        safe_unpickle(tmp_path / "eval.pkl")
    (tmp_path / "cut.pkl").write_bytes(pickle.dumps({b"a": np.zeros(50)}, protocol=2)[:40])
    with pytest.raises(DataError, match=r"cut\.pkl: not a readable pickle"):
        safe_unpickle(tmp_path / "cut.pkl")


# ---------------------------------------------------------------- missing data


def test_missing_dataset_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, phrase in [("mnist", "mnist.npz"), ("cifar10", "cifar-10-batches-py")]:
        with pytest.raises(DataError) as info:
            load_dataset(name, data_dir=tmp_path)
        message = str(info.value)
        assert message.startswith(f"{name} not found: looked in {tmp_path.resolve()}")
        assert phrase in message and "--data-dir DIR / set SPARRING_DATA" in message
    replaced = dataclasses.replace(mnist_module.FASHION, system_dirs=(tmp_path / "debian",))
    monkeypatch.setattr(mnist_module, "FASHION", replaced)
    with pytest.raises(DataError, match=r"fashion-mnist not found: .*debian"):
        load_dataset("fashion-mnist", data_dir=tmp_path)
    monkeypatch.delenv("SPARRING_DATA", raising=False)
    monkeypatch.setattr(paths, "default_data_dirs", lambda: [tmp_path / "default"])
    with pytest.raises(DataError, match=r"mnist not found: looked in .*default for mnist\.npz"):
        load_dataset("mnist")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("mnist", data_dir=tmp_path / "nowhere")


# ---------------------------------------------------------------- real data (skip when absent)


def test_real_mnist() -> None:
    data_dir = real_data_dir("mnist.npz")
    ds = load_dataset("mnist", data_dir=data_dir)
    assert ds.x_train is not None and ds.y_train is not None
    assert tuple(ds.x_test.shape) == (10000, 1, 28, 28)
    assert tuple(ds.x_train.shape) == (60000, 1, 28, 28)
    assert ds.x_test.dtype == torch.float32 and ds.y_test.dtype == torch.int64
    assert float(ds.x_test.min()) == 0.0 and float(ds.x_test.max()) == 1.0
    assert ds.y_test[:5].tolist() == [7, 2, 1, 0, 4]
    assert ds.sha256 == paths.KNOWN_SHA256["mnist.npz"]
    assert float(ds.x_train.mean()) == pytest.approx(ds.mean[0], abs=1e-4)


def test_real_cifar10_test_split() -> None:
    data_dir = real_data_dir("cifar10.npz")
    ds = load_dataset("cifar10", data_dir=data_dir, train=False)
    assert tuple(ds.x_test.shape) == (10000, 3, 32, 32) and ds.x_train is None
    assert ds.sha256 == paths.KNOWN_SHA256["cifar10.npz"]
    assert ds.y_test[:5].tolist() == [3, 8, 8, 0, 6]  # cat, ship, ship, airplane, frog
    with np.load(data_dir / "cifar10.npz") as archive:
        first = archive["x_test"][0]
    assert torch.equal(ds.x_test[0], torch.from_numpy(first).permute(2, 0, 1).float() / 255)
    means = ds.x_test.mean(dim=(0, 2, 3))
    assert torch.allclose(means, torch.tensor(ds.mean), atol=0.01)


def test_real_fashion_mnist() -> None:
    data_dir = real_data_dir("fashion_mnist_test.npz")
    ds = load_dataset("fashion-mnist", data_dir=data_dir, train=False)
    assert tuple(ds.x_test.shape) == (10000, 1, 28, 28) and ds.classes[-1] == "Ankle boot"
    assert ds.sha256 == paths.KNOWN_SHA256["fashion_mnist_test.npz"]


def test_fashion_mnist_debian_idx_matches_npz(tmp_path: Path) -> None:
    if not mnist_module.DEBIAN_FASHION_DIR.is_dir():
        pytest.skip("Debian package dataset-fashion-mnist is not installed")
    ds = load_dataset("fashion-mnist", data_dir=tmp_path)  # empty dir: idx files only
    assert ds.x_train is not None and tuple(ds.x_train.shape) == (60000, 1, 28, 28)
    assert "/usr/share/datasets/fashion-mnist" in ds.source
    try:
        npz_dir = real_data_dir("fashion_mnist_test.npz")
    except pytest.skip.Exception:
        return
    reference = load_dataset("fashion-mnist", data_dir=npz_dir, train=False)
    assert torch.equal(ds.x_test, reference.x_test) and torch.equal(ds.y_test, reference.y_test)
