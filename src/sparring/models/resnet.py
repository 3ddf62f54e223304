"""CIFAR ResNets (He et al. 2016, "Deep Residual Learning for Image Recognition", arXiv:1512.03385).

3 stages of n basic blocks with 16/32/64 channels (depth 6n + 2) and option-A shortcuts:
stride-2 subsampling ``x[:, :, ::2, ::2]`` plus zero channel padding split evenly on both sides.
Module names (conv1, bn1, layer{1,2,3}.i.{conv1,bn1,conv2,bn2}, linear) match the widely used
akamaster/pytorch_resnet_cifar10 checkpoints once their "module." prefix is stripped.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .build import MODELS

__all__ = ["CifarResNet", "BasicBlockA"]

#: normalization the akamaster checkpoints were trained with (ImageNet statistics)
AKAMASTER_MEAN = (0.485, 0.456, 0.406)
AKAMASTER_STD = (0.229, 0.224, 0.225)


class BasicBlockA(nn.Module):
    """Two 3x3 conv-BN layers with an option-A (parameter-free) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride = stride
        self.extra = planes - in_planes

    def shortcut(self, x: Tensor) -> Tensor:
        """Identity, or subsample by ``stride`` and zero-pad the new channels on both sides."""
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra:
            x = F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
        return x

    def forward(self, x: Tensor) -> Tensor:
        """Block output: relu(residual branch + shortcut)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 images: conv 16, 3 stages (16/32/64), global average pool, linear."""

    def __init__(self, blocks: int, *, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        planes = 16
        stages = []
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            layers = []
            for i in range(blocks):
                layers.append(BasicBlockA(planes, width, stride if i == 0 else 1))
                planes = width
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, K) for a normalized batch (B, C, H, W)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def _register(depth: int) -> None:
    blocks = (depth - 2) // 6

    def build(*, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
        return CifarResNet(blocks, num_classes=num_classes, in_channels=in_channels)

    build.__name__ = f"resnet{depth}"
    build.__doc__ = f"Build a CIFAR ResNet-{depth} ({blocks} blocks per stage, option-A shortcuts)."
    MODELS.register(
        f"resnet{depth}",
        input_shape=(3, 32, 32),
        num_classes=10,
        mean=AKAMASTER_MEAN,
        std=AKAMASTER_STD,
        description=f"CIFAR ResNet-{depth} (He et al. 2016, option-A shortcuts, 16/32/64 channels)",
    )(build)


for _depth in (20, 32, 44, 56):
    _register(_depth)
