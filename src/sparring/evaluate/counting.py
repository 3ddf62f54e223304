"""Count forward and backward passes (in samples) through a model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn


@dataclass
class Counter:
    """Samples passed forward and backward through the wrapped model."""

    forward: int = 0
    backward: int = 0


class _CountBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, logits: Tensor, counter: Counter) -> Tensor:
        ctx.counter = counter
        return logits.view_as(logits)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        ctx.counter.backward += grad.shape[0]
        return grad, None


class CountingModel(nn.Module):
    """Wraps a model; every call adds the batch size to counter.forward, every backward pass
    through its output adds it to counter.backward.

    Example:
        >>> counted = CountingModel(model); pgd(counted, x, y, threat=t); counted.counter.forward
    """

    def __init__(self, model: nn.Module, counter: Counter | None = None) -> None:
        super().__init__()
        self.model = model
        self.counter = counter if counter is not None else Counter()

    def forward(self, x: Tensor) -> Tensor:
        self.counter.forward += x.shape[0]
        out = self.model(x)
        if out.requires_grad:
            out = _CountBackward.apply(out, self.counter)
        return out
