"""scikit-learn's bundled 8x8 digits: the built-in default, no files needed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from .dataset import DATASETS, Dataset

__all__ = ["load_digits_dataset"]

DIGITS_CLASSES = tuple(str(i) for i in range(10))


@DATASETS.register(
    "digits",
    num_classes=10,
    input_shape=(1, 8, 8),
    files=(),
    needs_files=False,
    description="scikit-learn digits, 1797 images 8x8, stratified 75/25 split (seed 0)",
)
def load_digits_dataset(data_dir: Path | None = None, train: bool = True) -> Dataset:
    """Load scikit-learn's digits (Alpaydin & Kaynak 1998; UCI optdigits test set).

    Pixel values 0..16 are divided by 16; the split is ``train_test_split(test_size=0.25,
    random_state=0, stratify=labels)``: 1347 train, 450 test images, the same on every
    machine. ``mean``/``std`` are computed from the training images. ``data_dir`` is ignored.

    Example:
        >>> ds = load_digits_dataset()
        >>> tuple(ds.x_train.shape), tuple(ds.x_test.shape)
        ((1347, 1, 8, 8), (450, 1, 8, 8))
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    pixels = np.asarray(bunch.data, dtype="<f8")
    labels = np.asarray(bunch.target, dtype="<i8")
    digest = hashlib.sha256(pixels.tobytes() + labels.tobytes()).hexdigest()
    images = (pixels / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=0.25, random_state=0, stratify=labels
    )
    x_train = torch.from_numpy(np.ascontiguousarray(x_tr))
    mean = float(x_train.mean())
    std = float(x_train.std(unbiased=False))
    return Dataset(
        name="digits",
        classes=DIGITS_CLASSES,
        x_test=torch.from_numpy(np.ascontiguousarray(x_te)),
        y_test=torch.from_numpy(np.ascontiguousarray(y_te, dtype=np.int64)),
        x_train=x_train if train else None,
        y_train=torch.from_numpy(np.ascontiguousarray(y_tr, dtype=np.int64)) if train else None,
        mean=(mean,),
        std=(std,),
        sha256=digest,
        source="scikit-learn",
    )
