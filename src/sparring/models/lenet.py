"""LeNet-5 variant used by advertorch for MNIST (module names match its state dicts)."""

from __future__ import annotations

from torch import Tensor, nn

from .build import MODELS

__all__ = ["LeNet5"]


class LeNet5(nn.Module):
    """conv 32 k3 p1, ReLU, maxpool 2; conv 64 k3 p1, ReLU, maxpool 2; linear 3136->200, ReLU;
    linear 200->K. For 28x28 inputs (LeCun et al. 1998, as modified in advertorch,
    Ding et al. 2019, arXiv:1902.07623). Module names conv1, conv2, linear1, linear2 match
    advertorch's ``LeNet5`` so its MNIST checkpoints load strictly.
    """

    def __init__(self, *, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 3, padding=1)
        self.relu1 = nn.ReLU(inplace=True)
        self.maxpool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.relu2 = nn.ReLU(inplace=True)
        self.maxpool2 = nn.MaxPool2d(2)
        self.linear1 = nn.Linear(7 * 7 * 64, 200)
        self.relu3 = nn.ReLU(inplace=True)
        self.linear2 = nn.Linear(200, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, K) for a normalized batch (B, C, H, W)."""
        out = self.maxpool1(self.relu1(self.conv1(x)))
        out = self.maxpool2(self.relu2(self.conv2(out)))
        out = self.relu3(self.linear1(out.flatten(1)))
        return self.linear2(out)


@MODELS.register(
    "lenet5",
    input_shape=(1, 28, 28),
    num_classes=10,
    mean=(0.0,),
    std=(1.0,),
    description="advertorch's MNIST LeNet-5 variant (2 conv + 2 dense), no normalization",
)
def lenet5(*, num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """Build ``LeNet5`` (bare net)."""
    return LeNet5(num_classes=num_classes, in_channels=in_channels)
