"""Evaluation: the runner, attack specs, metrics, pass counting, the audit, detection and certification."""

from ..util import frozen
from .counting import Counter, CountingModel
from .runner import evaluate, predict
from .specs import AttackSpec, choose_targets

__all__ = ["AttackSpec", "Counter", "CountingModel", "choose_targets", "evaluate", "frozen", "predict"]
