"""The Dataset record, the dataset registry and ``load_dataset``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import paths
from ..errors import DataError
from ..registry import Registry

__all__ = ["DATASETS", "Dataset", "DatasetLoader", "load_dataset", "not_found", "require_train"]


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A labelled image dataset held in memory, images in [0, 1] and (N, C, H, W).

    Normalization is not applied: ``mean`` / ``std`` are for the model's Normalize layer.
    Equality is identity (tensors have no single truth value) and the repr shows shapes only.

    Example:
        >>> ds = load_dataset("digits")
        >>> ds.input_shape, ds.num_classes
        ((1, 8, 8), 10)
    """

    name: str
    classes: tuple[str, ...]
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_train: torch.Tensor | None
    y_train: torch.Tensor | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    sha256: str
    source: str

    def __post_init__(self) -> None:
        """Check shapes, dtypes, lengths and label ranges (pixel range is the loaders' job)."""
        if (self.x_train is None) != (self.y_train is None):
            raise DataError(f"{self.name}: expected x_train and y_train both set or both None")
        _check_split(self, "test", self.x_test, self.y_test)
        if self.x_train is not None and self.y_train is not None:
            _check_split(self, "train", self.x_train, self.y_train)
            if self.x_train.shape[1:] != self.x_test.shape[1:]:
                raise DataError(
                    f"{self.name}: expected train images of shape {tuple(self.x_test.shape[1:])}"
                    f" like the test images, got {tuple(self.x_train.shape[1:])}"
                )
        channels = self.x_test.shape[1]
        if len(self.mean) != channels or len(self.std) != channels:
            raise DataError(
                f"{self.name}: expected {channels} mean/std values, "
                f"got {len(self.mean)}/{len(self.std)}"
            )
        if any(s <= 0 for s in self.std):
            raise DataError(f"{self.name}: expected std > 0, got {self.std}")

    @property
    def num_classes(self) -> int:
        """Number of classes, ``len(classes)``."""
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one image, (C, H, W)."""
        c, h, w = self.x_test.shape[1:]
        return (int(c), int(h), int(w))

    def __repr__(self) -> str:
        train = "None" if self.x_train is None else str(len(self.x_train))
        return (
            f"Dataset(name={self.name!r}, test={len(self.x_test)}, train={train}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes}, "
            f"sha256={self.sha256[:12]!r}, source={self.source!r})"
        )


def _check_split(ds: Dataset, split: str, x: torch.Tensor, y: torch.Tensor) -> None:
    """Validate one split's tensors."""
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float32 or x.ndim != 4:
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise DataError(f"{ds.name}: expected x_{split} float32 (N, C, H, W), got {got}")
    if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.shape != (len(x),):
        got = f"{y.dtype} {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise DataError(f"{ds.name}: expected y_{split} int64 ({len(x)},), got {got}")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(ds.classes)):
        raise DataError(
            f"{ds.name}: expected y_{split} in [0, {len(ds.classes) - 1}], "
            f"got [{int(y.min())}, {int(y.max())}]"
        )


#: A loader gets the resolved data folder (None when none was found) and whether to read
#: the training split, and returns the Dataset or raises DataError.
DatasetLoader = Callable[[Path | None, bool], Dataset]

#: Registered datasets. Metadata: num_classes, input_shape, files (names looked for),
#: needs_files (False for bundled data), train_hint (how to provide the training split).
DATASETS: Registry[DatasetLoader] = Registry("dataset", group="sparring.datasets")


def load_dataset(name: str, *, data_dir: str | Path | None = None, train: bool = True) -> Dataset:
    """Load a registered dataset from local files (or scikit-learn for ``digits``).

    Args:
        name: one of ``DATASETS.names()``: digits, mnist, fashion-mnist, cifar10.
        data_dir: the data folder; default ``$SPARRING_DATA`` or ``../shared/data``
            (not resolved, hence not checked, for bundled data such as digits).
        train: False skips the training split (x_train / y_train are then None).
    Returns:
        The Dataset.
    Raises:
        UnknownNameError: ``name`` is not registered (with a "did you mean").
        DataError: files missing, corrupt or malformed.

    Example:
        >>> ds = load_dataset("digits", train=False)
        >>> ds.x_train is None, tuple(ds.x_test.shape)
        (True, (450, 1, 8, 8))
    """
    loader = DATASETS.get(name)
    folder = paths.find_data_dir(data_dir) if DATASETS.meta(name).get("needs_files", True) else None
    return loader(folder, bool(train))


def require_train(ds: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(x_train, y_train)`` or raise DataError saying how to provide them.

    Example:
        >>> x, y = require_train(load_dataset("digits"))
    """
    if ds.x_train is not None and ds.y_train is not None:
        return ds.x_train, ds.y_train
    hint = DATASETS.meta(ds.name).get("train_hint", "") if ds.name in DATASETS else ""
    hint = hint or "load it with train=True from files that contain the training split"
    raise DataError(
        f"{ds.name}: the training split is not loaded (read from {ds.source}); {hint}"
    )


def not_found(name: str, folders: list[Path], files: str, data_dir: Path | None) -> DataError:
    """Build the one-line "not found" DataError listing where a loader looked.

    Args:
        name: dataset name.
        folders: folders searched.
        files: the file names looked for, as one phrase.
        data_dir: the data folder in use (None adds the default candidates to the list).

    Example:
        >>> print(not_found("mnist", [Path("/d")], "mnist.npz", Path("/d")))  # doctest: +ELLIPSIS
        mnist not found: looked in /d for mnist.npz; put the files there, or pass --data-dir ...
    """
    looked = list(folders)
    if data_dir is None:
        looked = [*paths.default_data_dirs(), *looked]
    where = ", ".join(dict.fromkeys(str(p) for p in looked)) or "no data dir (none found)"
    return DataError(
        f"{name} not found: looked in {where} for {files}; "
        "put the files there, or pass --data-dir DIR / set SPARRING_DATA"
    )
