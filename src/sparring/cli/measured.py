"""What `sparring detect`, `certify` and `audit` share: the trained model they measure and the first test
images they measure it on."""

from __future__ import annotations

import argparse
from typing import Any

from torch import Tensor, nn

from ..data import Dataset
from ..errors import ConfigError
from ..experiment import check_fits, resolve_model


def trained(args: argparse.Namespace, ds: Dataset) -> tuple[nn.Module, dict[str, Any]]:
    """The --model (and --weights) given, which must be trained, checked against the dataset."""
    model, info = resolve_model(args.model, args.weights, weights_dir=args.weights_dir)
    if info.get("weights") is None:
        raise ConfigError(f"expected a trained model (a saved model, a pretrained alias, or --weights), got the "
                          f"bare architecture {args.model!r}")
    check_fits(model, ds.input_shape, ds.num_classes, ds.name)
    return model, info


def first(ds: Dataset, n: int, device: str) -> tuple[Tensor, Tensor]:
    """The first n test images and labels on the device (--n checked)."""
    if n < 1 or n > len(ds.y_test):
        raise ConfigError(f"--n must be between 1 and {len(ds.y_test)}, got {n}")
    return ds.x_test[:n].to(device), ds.y_test[:n].to(device)
