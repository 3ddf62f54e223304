"""Deliberately broken defenses that only mask gradients: the audit's test bench (issue: trustworthy
evaluation). Each looks robust to a naive attack; an adaptive attack shows it is not.

Quantize and KillGradient do not declare themselves non-differentiable: the audit must find them from
their gradients. `planted(name, net)` builds each around a trained network.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..defenses import Defended, GaussianNoise, MedianBlur
from ..registry import Registry

__all__ = ["PLANTED", "KillGradient", "Quantize", "planted"]


class Quantize(nn.Module):
    """Input quantization to `levels` + 1 grey levels by rounding: zero gradient almost everywhere
    (Buckman et al. 2018's thermometer encoding and plain quantization were broken by BPDA, arXiv:1802.00420)."""

    def __init__(self, levels: int = 4) -> None:
        super().__init__()
        self.levels = levels

    def forward(self, x: Tensor) -> Tensor:
        return torch.round(x * self.levels) / self.levels


class _Zero(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return torch.zeros_like(grad)


class KillGradient(nn.Module):
    """Forward: the identity. Backward: zero. Changes nothing but what a gradient attack sees."""

    def forward(self, x: Tensor) -> Tensor:
        return _Zero.apply(x)


#: The planted defenses: name -> builder(net) of the broken model; meta "what" says what it is.
PLANTED: Registry[Callable[[nn.Module], nn.Module]] = Registry("planted defense")
PLANTED.register("quantization", what="input rounded to 5 grey levels (does not declare itself non-differentiable)")(
    lambda net: nn.Sequential(Quantize(4), net))
PLANTED.register("gradient-killer", what="identity forward, zero backward (undeclared)")(
    lambda net: nn.Sequential(KillGradient(), net))
PLANTED.register("noise", what="Gaussian noise sigma 0.3 on the input at test time (declared random)")(
    lambda net: nn.Sequential(GaussianNoise(0.3), net))
PLANTED.register("median", what="median filter 3x3 (declared non-differentiable, with a BPDA surrogate)")(
    lambda net: Defended(MedianBlur(3), net))


def planted(name: str, net: nn.Module) -> nn.Module:
    """The broken defense `name` (a name of PLANTED) around `net`, in eval mode.
        >>> model = planted("gradient-killer", net)
        >>> audit(model, x, y, threat=ThreatModel(Norm.LINF, 0.1))["verdict"]  # 'fail'
    """
    return PLANTED.get(name)(net).eval()
