"""Shared fixtures: tiny seeded models and batches, so the suite runs in seconds on a CPU."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from sparring.config import TrainSettings

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


#: the settings the library's training functions defaulted to before TrainSettings (SGD 0.1, momentum 0.9,
#: weight decay 5e-4, cosine, batches of 128, 10 epochs): the tests that relied on them say so with this
SGD = TrainSettings(epochs=10, batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4)


class _Lines(logging.Handler):
    def __init__(self, stop: str | None) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.stop = stop

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage()
        if self.stop is not None and line.startswith(self.stop):
            raise KeyboardInterrupt  # a kill as this line is logged (a handler's error reaches the caller)
        self.lines.append(line)


@contextlib.contextmanager
def logged(stop: str | None = None) -> Iterator[list[str]]:
    """The lines the "sparring" loggers log within the block; with ``stop``, a KeyboardInterrupt as soon as a
    line starting with it is logged (training logs an epoch before it saves its state: a kill in that epoch)."""
    handler, logger = _Lines(stop), logging.getLogger("sparring")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# tests/plugins holds a defense installed as a plugin (a module and its dist-info with a "sparring.defenses"
# entry point): on sys.path before the registry is first read, so every test sees it (tests/test_plugins.py)
sys.path.insert(0, str(Path(__file__).resolve().parent / "plugins"))
