"""PreAct ResNet-18 (He et al. 2016, "Identity Mappings in Deep Residual Networks", arXiv:1603.05027).

The 32x32 variant common in adversarial-robustness work (4 stages 64/128/256/512, 2 blocks
each, 1x1 projection shortcuts, final BN-ReLU). Module names (conv1, layerK.i.{bn1,conv1,bn2,
conv2,shortcut.0}, bn, linear) follow the usual public PyTorch implementations.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .build import MODELS
from .small import CIFAR10_MEAN, CIFAR10_STD

__all__ = ["PreActBlock", "PreActResNet18"]


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3, BN-ReLU-conv3x3, plus an identity or 1x1-conv shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        """Block output: residual branch + shortcut (pre-activation, no final ReLU)."""
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class PreActResNet18(nn.Module):
    """PreAct ResNet-18: conv 64, stages (64, 128, 256, 512) x 2 blocks, BN-ReLU, pool, linear."""

    def __init__(self, *, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        planes = 64
        stages = []
        for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(nn.Sequential(PreActBlock(planes, width, stride), PreActBlock(width, width, 1)))
            planes = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn = nn.BatchNorm2d(512)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, K) for a normalized batch (B, C, H, W)."""
        out = self.conv1(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.relu(self.bn(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


@MODELS.register(
    "preact-resnet18",
    input_shape=(3, 32, 32),
    num_classes=10,
    mean=CIFAR10_MEAN,
    std=CIFAR10_STD,
    description="PreAct ResNet-18 for 32x32 images (He et al. 2016, identity mappings)",
)
def preact_resnet18(*, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """Build ``PreActResNet18`` (bare net)."""
    return PreActResNet18(num_classes=num_classes, in_channels=in_channels)
