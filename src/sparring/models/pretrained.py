"""Named third-party pretrained weights (``PRETRAINED``) and ``load_pretrained``.

The files are not bundled or downloaded: they are looked up in the weights folder
(``--weights-dir`` > ``$SPARRING_WEIGHTS`` > ``../shared/weights``) and checked by sha256.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from .. import paths
from ..errors import DataError
from ..registry import Registry
from .build import build_model
from .io import load_weights
from .normalize import Normalized
from .resnet import AKAMASTER_MEAN, AKAMASTER_STD

__all__ = ["PRETRAINED", "PretrainedSpec", "load_pretrained"]


@dataclass(frozen=True)
class PretrainedSpec:
    """A third-party checkpoint: file name, architecture, normalization and published accuracy (%)."""

    file: str
    arch: str
    dataset: str
    accuracy: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    source: str
    license: str
    description: str


PRETRAINED: Registry[PretrainedSpec] = Registry("pretrained model")

_AKAMASTER = "github.com/akamaster/pytorch_resnet_cifar10"
_ADVERTORCH = "github.com/BorealisAI/advertorch (advertorch/test_data)"
_SPECS = {
    "resnet20-akamaster": PretrainedSpec(
        "akamaster_resnet20-12fca82f.th", "resnet20", "cifar10", 91.73, AKAMASTER_MEAN, AKAMASTER_STD, 10,
        _AKAMASTER, "BSD-2-Clause", "CIFAR-10 ResNet-20, standard training",
    ),
    "resnet56-akamaster": PretrainedSpec(
        "akamaster_resnet56-4bfd9763.th", "resnet56", "cifar10", 93.39, AKAMASTER_MEAN, AKAMASTER_STD, 10,
        _AKAMASTER, "BSD-2-Clause", "CIFAR-10 ResNet-56, standard training",
    ),
    "lenet5-advertorch-clean": PretrainedSpec(
        "advertorch_mnist_lenet5_clntrained.pt", "lenet5", "mnist", 98.89, (0.0,), (1.0,), 10,
        _ADVERTORCH, "LGPL-3.0", "MNIST LeNet-5, standard training",
    ),
    "lenet5-advertorch-adv": PretrainedSpec(
        "advertorch_mnist_lenet5_advtrained.pt", "lenet5", "mnist", 98.64, (0.0,), (1.0,), 10,
        _ADVERTORCH, "LGPL-3.0", "MNIST LeNet-5, PGD adversarially trained (Linf eps 0.3, 40 steps of 0.01)",
    ),
}  # fmt: skip
for _name, _spec in _SPECS.items():
    PRETRAINED.register(_name, **asdict(_spec))(_spec)

_HOW = "pass --weights-dir DIR (weights_dir=) or set SPARRING_WEIGHTS to the folder holding it"


def load_pretrained(alias: str, *, weights_dir: str | Path | None = None) -> Normalized:
    """Build the architecture of ``alias`` and load its third-party weights (eval mode).

    Args:
        alias: a name in ``PRETRAINED`` (e.g. "resnet20-akamaster", "lenet5-advertorch-adv").
        weights_dir: folder holding the file; default ``$SPARRING_WEIGHTS`` or ../shared/weights.
    Raises:
        UnknownNameError: unknown alias. DataError: file missing, wrong sha256, or unloadable.

    Example:
        >>> model = load_pretrained("resnet20-akamaster")  # doctest: +SKIP
        >>> model(torch.rand(1, 3, 32, 32)).shape
        torch.Size([1, 10])
    """
    spec = PRETRAINED.get(alias)
    try:
        folder = paths.find_weights_dir(weights_dir)
    except DataError as exc:
        raise DataError(f"pretrained {alias} needs {spec.file}: {exc}; {_HOW}") from None
    if folder is None:
        looked = ", ".join(str(p) for p in paths.default_weights_dirs())
        raise DataError(f"pretrained {alias} needs {spec.file}, but no weights folder was found "
                        f"(SPARRING_WEIGHTS unset; looked in {looked}); {_HOW}")  # fmt: skip
    file = folder / spec.file
    if not file.is_file():
        raise DataError(f"pretrained {alias} needs {spec.file}, not found in {folder}; {_HOW}")
    paths.check_sha256(file, paths.KNOWN_SHA256.get(spec.file), setting="--weights-dir / SPARRING_WEIGHTS")
    model = build_model(spec.arch, num_classes=spec.num_classes, mean=spec.mean, std=spec.std)
    load_weights(model, file)
    return model.eval()
