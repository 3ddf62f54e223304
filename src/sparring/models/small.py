"""Small CNNs: ``digits-cnn`` (sklearn 8x8 digits), ``mnist-small`` (the MNIST net of "fast is
better than free") and ``cifar-cnn`` (the seed report's base model)."""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from ..errors import InputError
from .build import MODELS

__all__ = ["CifarCNN", "DigitsCNN", "MnistSmall"]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def _check_size(image_size: int, divisor: int, name: str) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < divisor:
        raise InputError(f"expected {name} image_size to be an integer >= {divisor}, got {image_size!r}")


class MnistSmall(nn.Module):
    """conv 16 k4 s2 p1, ReLU, conv 32 k4 s2 p1, ReLU, linear 100, ReLU, linear K.

    The MNIST model of Wong, Rice & Kolter 2020 ("Fast is better than free", arXiv:2001.03994),
    LeNet-sized and cheap enough (0.6 M multiply-adds per image) for adversarial training on a CPU.
    Noise slots noise1 / noise2 as in cifar-cnn (sparring.defenses.insert_noise).
    """

    def __init__(self, *, num_classes: int = 10, in_channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        _check_size(image_size, 4, "mnist-small")
        side = (image_size // 2) // 2
        # noise slots (Identity until insert_noise fills them): after the first conv, between the dense
        # layers; named so that the weights keep the plain Sequential keys (features.0, classifier.3, ...)
        self.features = nn.Sequential(OrderedDict([
            ("0", nn.Conv2d(in_channels, 16, 4, stride=2, padding=1)), ("noise1", nn.Identity()),
            ("1", nn.ReLU(inplace=True)), ("2", nn.Conv2d(16, 32, 4, stride=2, padding=1)),
            ("3", nn.ReLU(inplace=True)),
        ]))
        self.classifier = nn.Sequential(OrderedDict([
            ("0", nn.Flatten()), ("1", nn.Linear(32 * side * side, 100)), ("2", nn.ReLU(inplace=True)),
            ("noise2", nn.Identity()), ("3", nn.Linear(100, num_classes)),
        ]))

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, K) for a normalized batch (B, C, H, W)."""
        return self.classifier(self.features(x))


class DigitsCNN(nn.Module):
    """conv 32 k3 p1, ReLU, conv 64 k3 p1, ReLU, maxpool 2, linear 128, ReLU, linear K.

    Trains to about 98% on the scikit-learn 8x8 digits in a few seconds of CPU.
    """

    def __init__(self, *, num_classes: int = 10, in_channels: int = 1, image_size: int = 8) -> None:
        super().__init__()
        _check_size(image_size, 2, "digits-cnn")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        side = image_size // 2
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * side * side, 128), nn.ReLU(inplace=True), nn.Linear(128, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, K) for a normalized batch (B, C, H, W)."""
        return self.classifier(self.features(x))


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class CifarCNN(nn.Module):
    """The seed report's base CIFAR-10 CNN: three blocks of (conv-BN-ReLU) x2 + maxpool
    (widths 64/128/256), then Dropout, dense ``hidden``, ReLU, Dropout, dense K.

    Two named ``nn.Identity`` slots let a defense insert a noise layer where the report did
    (Lecuyer et al. 2019, PixelDP, arXiv:1802.03471): ``noise1`` right after the first
    convolution (before its BatchNorm) and ``noise2`` between the two dense layers
    (after the first dense layer's ReLU). Replace them with ``model.net.noise1 = layer``.
    Reaches about 88% with SGD, a schedule and crop/flip augmentation (report: 87.75%).
    """

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
        widths: tuple[int, int, int] = (64, 128, 256),
        hidden: int = 512,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        _check_size(image_size, 8, "cifar-cnn")
        if len(widths) != 3 or not 0.0 <= dropout < 1.0:
            raise InputError(f"expected 3 widths and 0 <= dropout < 1, got widths {widths}, dropout {dropout}")
        w1, w2, w3 = (int(w) for w in widths)
        self.conv1 = nn.Conv2d(in_channels, w1, 3, padding=1, bias=False)
        self.noise1 = nn.Identity()
        self.bn1 = nn.BatchNorm2d(w1)
        self.features = nn.Sequential(
            nn.ReLU(inplace=True), _conv_bn_relu(w1, w1), nn.MaxPool2d(2),
            _conv_bn_relu(w1, w2), _conv_bn_relu(w2, w2), nn.MaxPool2d(2),
            _conv_bn_relu(w2, w3), _conv_bn_relu(w3, w3), nn.MaxPool2d(2),
            nn.Flatten(),
        )  # fmt: skip
        side = image_size // 8
        self.dropout1 = nn.Dropout(dropout)
        self.fc1 = nn.Linear(w3 * side * side, hidden)
        self.relu = nn.ReLU(inplace=True)
        self.noise2 = nn.Identity()
        self.dropout2 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, K) for a normalized batch (B, C, H, W)."""
        out = self.features(self.bn1(self.noise1(self.conv1(x))))
        out = self.noise2(self.relu(self.fc1(self.dropout1(out))))
        return self.fc2(self.dropout2(out))


MODELS.register(
    "digits-cnn",
    input_shape=(1, 8, 8),
    num_classes=10,
    mean=(0.3053,),
    std=(0.3760,),
    description="small CNN for the scikit-learn 8x8 digits (2 conv + 2 dense)",
)(DigitsCNN)

MODELS.register(
    "mnist-small",
    input_shape=(1, 28, 28),
    num_classes=10,
    mean=(0.0,),
    std=(1.0,),
    description="MNIST net of 'fast is better than free' (2 strided conv + 2 dense), for CPU adversarial training",
)(MnistSmall)

CIFAR_INPUT = {"input_shape": (3, 32, 32), "num_classes": 10, "mean": CIFAR10_MEAN, "std": CIFAR10_STD}

MODELS.register(
    "cifar-cnn",
    **CIFAR_INPUT,
    description="seed report's base CNN: 3 x (conv-BN-ReLU x2 + maxpool), dropout, 2 dense; noise slots",
)(CifarCNN)


def cifar_cnn_small(**kwargs: object) -> CifarCNN:
    """The seed report's CNN at a quarter of its width (16/32/64 channels, 128 dense): the same layers and
    noise slots for reduced CPU runs of the seed study (about 16x fewer operations)."""
    return CifarCNN(**{"widths": (16, 32, 64), "hidden": 128, **kwargs})  # type: ignore[arg-type]


MODELS.register(
    "cifar-cnn-small",
    **CIFAR_INPUT,
    description="the seed report's CNN at quarter width (16/32/64, dense 128), for CPU runs",
)(cifar_cnn_small)
