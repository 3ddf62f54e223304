"""The model registry ``MODELS`` and ``build_model``."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from ..errors import ConfigError, InputError
from ..registry import Registry
from ..util import check_number
from .normalize import Normalized

__all__ = ["MODELS", "build_model"]

#: Builders ``fn(*, num_classes, in_channels, **kwargs) -> nn.Module`` returning the bare net
#: (no normalization). Metadata: input_shape (C, H, W), num_classes, mean, std, description.
MODELS: Registry[Callable[..., nn.Module]] = Registry("model", group="sparring.models")


def _default_stats(name: str, values: Sequence[float], channels: int, what: str) -> tuple[float, ...]:
    if len(values) in (1, channels):
        return tuple(values)
    raise ConfigError(
        f"{name}'s default {what} is for {len(values)} channels; pass mean= and std= for in_channels={channels}"
    )


def build_model(
    name: str,
    *,
    num_classes: int | None = None,
    in_channels: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **kwargs: Any,
) -> Normalized:
    """Build a registered architecture wrapped with its Normalize layer (images in [0, 1]).

    Args:
        name: a name in ``MODELS`` (``MODELS.names()``), e.g. "resnet20" or "digits-cnn".
        num_classes, in_channels: default to the registry metadata.
        mean, std: per-channel normalization; default to the registry metadata.
        **kwargs: architecture options passed to the builder (e.g. ``image_size``, ``dropout``).
    Raises:
        UnknownNameError: unknown name (with a "did you mean").
        ConfigError: an option the builder does not take, or default stats that do not fit.

    Example:
        >>> model = build_model("digits-cnn")
        >>> model(torch.rand(4, 1, 8, 8)).shape
        torch.Size([4, 10])
    """
    builder = MODELS.get(name)
    meta = MODELS.meta(name)
    classes = check_number(meta["num_classes"] if num_classes is None else num_classes, "num_classes",
                           integer=True, low=1)
    channels = check_number(meta["input_shape"][0] if in_channels is None else in_channels, "in_channels", integer=True,
                            low=1)
    mean = _default_stats(name, meta["mean"], channels, "mean") if mean is None else tuple(mean)
    std = _default_stats(name, meta["std"], channels, "std") if std is None else tuple(std)
    if len(mean) not in (1, channels) or len(std) not in (1, channels):
        raise InputError(f"expected 1 or {channels} mean/std values for {name}, got {len(mean)}/{len(std)}")
    accepted = [p for p in inspect.signature(builder).parameters if p not in ("num_classes", "in_channels")]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(
            f"model {name} does not take option(s) {', '.join(unknown)} (accepted: {', '.join(accepted) or 'none'})"
        )
    net = builder(num_classes=classes, in_channels=channels, **kwargs)
    arch_kwargs = {"num_classes": classes, "in_channels": channels, **kwargs}
    return Normalized(net, mean, std, arch=name, arch_kwargs=arch_kwargs)
