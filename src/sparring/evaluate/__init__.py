"""Evaluation: the runner, metrics, pass counting."""

from .counting import Counter, CountingModel, frozen
from .runner import evaluate, predict
from .specs import AttackSpec, choose_targets

__all__ = ["AttackSpec", "Counter", "CountingModel", "choose_targets", "evaluate", "frozen", "predict"]
