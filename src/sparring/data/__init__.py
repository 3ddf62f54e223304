"""Datasets: a registry of loaders reading local files (never downloading).

    >>> from sparring.data import load_dataset, DATASETS
    >>> DATASETS.names()
    ['cifar10', 'digits', 'fashion-mnist', 'mnist']
    >>> ds = load_dataset("digits")

Images come as float32 (N, C, H, W) in [0, 1]; normalization belongs to the model.
"""

from __future__ import annotations

# importing the loader modules registers "cifar10", "digits", "mnist" and "fashion-mnist"
from .cifar10 import CIFAR10_CLASSES, load_cifar10, read_cifar_folder
from .dataset import DATASETS, Dataset, DatasetLoader, load_dataset, require_train
from .digits import load_digits_dataset
from .formats import read_idx, read_npz
from .mnist import FASHION_CLASSES, load_fashion_mnist, load_mnist
from .safe_pickle import safe_unpickle
from .user import load_inputs

__all__ = [
    "CIFAR10_CLASSES",
    "DATASETS",
    "FASHION_CLASSES",
    "Dataset",
    "DatasetLoader",
    "load_cifar10",
    "load_dataset",
    "load_inputs",
    "load_digits_dataset",
    "load_fashion_mnist",
    "load_mnist",
    "read_cifar_folder",
    "read_idx",
    "read_npz",
    "require_train",
    "safe_unpickle",
]
