"""Shared fixtures: tiny seeded models and batches, so the suite runs in seconds on a CPU."""

from __future__ import annotations

import pytest
import torch
from torch import nn

# Tiny models gain nothing from threads, and one thread keeps the suite fast on a busy machine.
torch.set_num_threads(1)


def tiny_cnn(seed: int = 0, classes: int = 10) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(8 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, classes)).eval()


@pytest.fixture
def model() -> nn.Module:
    return tiny_cnn()


@pytest.fixture
def batch(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(16, 1, 8, 8, generator=g)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    return x, y
