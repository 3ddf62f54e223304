"""MNIST and Fashion-MNIST from local files: an npz archive or the official idx files."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..paths import check_sha256, sha256_file
from .dataset import DATASETS, Dataset, not_found
from .formats import (
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    check_images,
    check_labels,
    images_to_tensor,
    labels_to_tensor,
    read_idx,
    read_npz,
)

__all__ = ["FASHION_CLASSES", "load_fashion_mnist", "load_mnist"]

FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
COUNTS = {"train": 60000, "test": 10000}
_IDX_PHRASE = "the idx files {}-images-idx3-ubyte[.gz] and {}-labels-idx1-ubyte[.gz]"


@dataclass(frozen=True)
class _Family:
    """What differs between MNIST and Fashion-MNIST."""

    name: str
    classes: tuple[str, ...]
    mean: float
    std: float
    npz_name: str
    npz_has_train: bool
    subdirs: tuple[str, ...]  # idx folders relative to the data dir ("" is the dir itself)
    system_dirs: tuple[Path, ...]  # idx folders outside the data dir

    def idx_dirs(self, data_dir: Path | None) -> list[Path]:
        """Folders searched for idx files, in order."""
        inside = [data_dir / sub if sub else data_dir for sub in self.subdirs] if data_dir else []
        return [*inside, *self.system_dirs]


MNIST = _Family("mnist", tuple(str(i) for i in range(10)), 0.1307, 0.3081, "mnist.npz", True,
                ("", "mnist", "MNIST/raw"), ())
FASHION = _Family("fashion-mnist", FASHION_CLASSES, 0.2860, 0.3530, "fashion_mnist_test.npz",
                  False, ("fashion-mnist", "FashionMNIST/raw"), (DEBIAN_FASHION_DIR,))


def find_idx(folders: list[Path], split: str) -> tuple[Path, Path] | None:
    """Return (images, labels) idx paths of ``split`` from the first folder that has both.

    Each file may be gzipped (``.gz``, preferred) or plain.

    Example:
        >>> find_idx([Path("/nonexistent")], "test") is None
        True
    """
    for folder in folders:
        found = [_first_file(folder, base) for base in IDX_NAMES[split]]
        if found[0] is not None and found[1] is not None:
            return found[0], found[1]
    return None


def _first_file(folder: Path, base: str) -> Path | None:
    for name in (base + ".gz", base):
        if (folder / name).is_file():
            return folder / name
    return None


def _from_idx(paths: tuple[Path, Path], split: str) -> tuple[np.ndarray, np.ndarray]:
    images_path, labels_path = paths
    n = COUNTS[split]
    images = check_images(read_idx(images_path, IDX_IMAGES_MAGIC), (n, 28, 28),
                          what=f"{split} images", source=images_path)
    labels = check_labels(read_idx(labels_path, IDX_LABELS_MAGIC), n, 10,
                          what=f"{split} labels", source=labels_path)
    return images, labels


def _from_npz(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    n = COUNTS[split]
    arrays = read_npz(path, [f"x_{split}", f"y_{split}"])
    images = check_images(arrays[f"x_{split}"], (n, 28, 28), what=f"x_{split}", source=path)
    labels = check_labels(arrays[f"y_{split}"], n, 10, what=f"y_{split}", source=path)
    return images, labels


def _load(family: _Family, data_dir: Path | None, train: bool) -> Dataset:
    """Read the test split (required) and the training split (when asked and present)."""
    npz = data_dir / family.npz_name if data_dir is not None else None
    npz = npz if npz is not None and npz.is_file() else None
    folders = family.idx_dirs(data_dir)
    files: list[Path] = []
    digests: list[str] = []

    if npz is not None:
        x_test, y_test = _from_npz(npz, "test")
        files.append(npz)
        digests.append(check_sha256(npz))
    elif (test_idx := find_idx(folders, "test")) is not None:
        x_test, y_test = _from_idx(test_idx, "test")
        files.extend(test_idx)
        digests.extend(sha256_file(p) for p in test_idx)
    else:
        looked = ([data_dir] if data_dir is not None else []) + folders
        phrase = f"{family.npz_name} or {_IDX_PHRASE.format('t10k', 't10k')}"
        raise not_found(family.name, list(dict.fromkeys(looked)), phrase, data_dir)

    x_train: np.ndarray | None = None
    y_train: np.ndarray | None = None
    if train:
        if npz is not None and family.npz_has_train:
            x_train, y_train = _from_npz(npz, "train")
        elif (train_idx := find_idx(folders, "train")) is not None:
            x_train, y_train = _from_idx(train_idx, "train")
            files.extend(train_idx)
            digests.extend(sha256_file(p) for p in train_idx)

    digest = digests[0] if len(digests) == 1 else \
        hashlib.sha256("".join(digests).encode("ascii")).hexdigest()
    return Dataset(
        name=family.name,
        classes=family.classes,
        x_test=images_to_tensor(x_test, "NHW"),
        y_test=labels_to_tensor(y_test),
        x_train=images_to_tensor(x_train, "NHW") if x_train is not None else None,
        y_train=labels_to_tensor(y_train) if y_train is not None else None,
        mean=(family.mean,),
        std=(family.std,),
        sha256=digest,
        source=", ".join(str(p) for p in files),
    )


@DATASETS.register(
    "mnist",
    num_classes=10,
    input_shape=(1, 28, 28),
    files=("mnist.npz", *IDX_NAMES["train"], *IDX_NAMES["test"]),
    needs_files=True,
    description="MNIST (LeCun et al. 1998), 60000/10000 handwritten digits 28x28",
    train_hint="put mnist.npz (with x_train, y_train) or " + _IDX_PHRASE.format("train", "train")
    + " in the data dir (or its mnist/ or MNIST/raw/)",
)
def load_mnist(data_dir: Path | None, train: bool = True) -> Dataset:
    """Load MNIST from ``<data_dir>/mnist.npz`` or the official idx files.

    idx files are searched in ``<data_dir>``, ``<data_dir>/mnist`` and ``<data_dir>/MNIST/raw``
    (gzipped or not); their magic numbers, counts (60000/10000), 28x28 shape and label range
    are checked; mnist.npz is checked against its known sha256.

    Example:
        >>> ds = load_mnist(Path("/work/shared/data"), train=False)  # doctest: +SKIP
        >>> ds.y_test[:5].tolist()  # doctest: +SKIP
        [7, 2, 1, 0, 4]
    """
    return _load(MNIST, data_dir, train)


@DATASETS.register(
    "fashion-mnist",
    num_classes=10,
    input_shape=(1, 28, 28),
    files=("fashion_mnist_test.npz", *IDX_NAMES["train"], *IDX_NAMES["test"]),
    needs_files=True,
    description="Fashion-MNIST (Xiao et al. 2017, arXiv:1708.07747), 60000/10000 28x28",
    train_hint="put " + _IDX_PHRASE.format("train", "train") + " in <data dir>/fashion-mnist/ "
    "(or apt-get install dataset-fashion-mnist, which puts them in /usr/share/datasets/"
    "fashion-mnist)",
)
def load_fashion_mnist(data_dir: Path | None, train: bool = True) -> Dataset:
    """Load Fashion-MNIST: test split from ``fashion_mnist_test.npz`` or idx files, training
    split from idx files.

    idx folders: ``<data_dir>/fashion-mnist``, ``<data_dir>/FashionMNIST/raw`` and
    ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``).

    Example:
        >>> ds = load_fashion_mnist(Path("/work/shared/data"), train=False)  # doctest: +SKIP
        >>> ds.classes[0]  # doctest: +SKIP
        'T-shirt/top'
    """
    return _load(FASHION, data_dir, train)
