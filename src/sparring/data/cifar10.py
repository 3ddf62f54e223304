"""CIFAR-10 from local files: ``cifar10.npz`` or the official ``cifar-10-batches-py/`` folder."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..paths import check_sha256, sha256_file
from .dataset import DATASETS, Dataset, not_found
from .formats import check_images, check_labels, images_to_tensor, labels_to_tensor, read_npz
from .safe_pickle import read_cifar_batch, read_cifar_meta

__all__ = ["CIFAR10_CLASSES", "load_cifar10", "read_cifar_folder"]

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
COUNTS = {"train": 50000, "test": 10000}
FOLDER = "cifar-10-batches-py"


def read_cifar_folder(
    folder: str | Path, split: str, *, count: int | None = -1
) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """Read one split of a ``cifar-10-batches-py`` folder (safely, see ``safe_pickle``).

    Args:
        folder: the folder holding ``data_batch_1..5``, ``test_batch`` and ``batches.meta``.
        split: ``"train"`` or ``"test"``.
        count: number of images expected; -1 (default) means the official 50000 / 10000,
            None skips the check.
    Returns:
        ``(images uint8 (N, 3, 32, 32), labels int64 (N,), files read)``.
    Raises:
        DataError: a file is missing, unsafe, malformed, or the counts / class names differ.

    Example:
        >>> x, y, _ = read_cifar_folder("data/cifar-10-batches-py", "test")  # doctest: +SKIP
    """
    folder = Path(folder)
    meta = folder / "batches.meta"
    names = BATCHES[split]
    paths = [folder / name for name in names]
    missing = [p.name for p in [meta, *paths] if not p.is_file()]
    if missing:
        raise DataError(f"{folder}: expected CIFAR-10 files {', '.join(missing)}, not found")
    classes = read_cifar_meta(meta)
    if classes != CIFAR10_CLASSES:
        raise DataError(
            f"{meta}: expected label_names {list(CIFAR10_CLASSES)}, got {list(classes)}"
        )
    parts = [read_cifar_batch(p) for p in paths]
    images = parts[0][0] if len(parts) == 1 else np.concatenate([p[0] for p in parts])
    labels = parts[0][1] if len(parts) == 1 else np.concatenate([p[1] for p in parts])
    expected = COUNTS[split] if count == -1 else count
    if expected is not None and len(images) != expected:
        raise DataError(
            f"{folder}: expected {expected} {split} images in {', '.join(names)}, got {len(images)}"
        )
    return images, labels, [meta, *paths]


def _find_folder(data_dir: Path | None) -> Path | None:
    """The first ``cifar-10-batches-py`` folder that holds ``test_batch``."""
    if data_dir is None:
        return None
    for folder in (data_dir / FOLDER, data_dir / "cifar10" / FOLDER, data_dir):
        if (folder / "test_batch").is_file():
            return folder
    return None


def _from_npz(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    n = COUNTS[split]
    arrays = read_npz(path, [f"x_{split}", f"y_{split}"])
    images = check_images(arrays[f"x_{split}"], (n, 32, 32, 3), what=f"x_{split}", source=path)
    labels = check_labels(arrays[f"y_{split}"], n, 10, what=f"y_{split}", source=path)
    return images, labels


@DATASETS.register(
    "cifar10",
    num_classes=10,
    input_shape=(3, 32, 32),
    files=("cifar10.npz", FOLDER),
    needs_files=True,
    description="CIFAR-10 (Krizhevsky 2009), 50000/10000 colour images 32x32",
    train_hint="put cifar10.npz (with x_train, y_train) or cifar-10-batches-py/ with "
    "data_batch_1..5 in the data dir",
)
def load_cifar10(data_dir: Path | None, train: bool = True) -> Dataset:
    """Load CIFAR-10 from ``<data_dir>/cifar10.npz`` (HWC, sha256-checked) or the official
    python pickles in ``<data_dir>/cifar-10-batches-py`` (read without executing code).

    Example:
        >>> ds = load_cifar10(Path("/work/shared/data"), train=False)  # doctest: +SKIP
        >>> ds.input_shape  # doctest: +SKIP
        (3, 32, 32)
    """
    npz = data_dir / "cifar10.npz" if data_dir is not None else None
    x_train: np.ndarray | None = None
    y_train: np.ndarray | None = None
    if npz is not None and npz.is_file():
        x_test, y_test = _from_npz(npz, "test")
        if train:
            x_train, y_train = _from_npz(npz, "train")
        layout, files, digest = "NHWC", [npz], check_sha256(npz)
    elif (folder := _find_folder(data_dir)) is not None:
        x_test, y_test, files = read_cifar_folder(folder, "test")
        if train and all((folder / b).is_file() for b in BATCHES["train"]):
            x_train, y_train, train_files = read_cifar_folder(folder, "train")
            files += train_files[1:]  # batches.meta is already listed
        joined = "".join(sha256_file(p) for p in files)
        layout, digest = "NCHW", hashlib.sha256(joined.encode("ascii")).hexdigest()
    else:
        looked = [data_dir, data_dir / FOLDER, data_dir / "cifar10" / FOLDER] if data_dir else []
        phrase = f"cifar10.npz or {FOLDER}/ (test_batch, batches.meta, data_batch_1..5)"
        raise not_found("cifar10", looked, phrase, data_dir)
    return Dataset(
        name="cifar10",
        classes=CIFAR10_CLASSES,
        x_test=images_to_tensor(x_test, layout),
        y_test=labels_to_tensor(y_test),
        x_train=images_to_tensor(x_train, layout) if x_train is not None else None,
        y_train=labels_to_tensor(y_train) if y_train is not None else None,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        sha256=digest,
        source=", ".join(str(p) for p in files),
    )
