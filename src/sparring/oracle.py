"""A label-only, query-counting view of a model: what a black-box attacker may see.

Papernot et al., "Practical black-box attacks against machine learning", arXiv:1602.02697:
the attacker observes only the predicted label of each query, and pays for every one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .errors import InputError, SparringError


class QueryBudgetError(SparringError):
    """A label query would take the oracle past its hard query budget."""


class LabelOracle:
    """Answers queries with argmax labels only (no logits, no gradients) and counts them.

    The wrapped model is captured in a closure and not exposed as an attribute; queries run
    under torch.no_grad on the caller's device, in chunks of `chunk` samples. A query batch
    that would take `queries` past `budget` raises QueryBudgetError before any of it is answered.

    Example:
        >>> oracle = LabelOracle(model, budget=6400)
        >>> labels = oracle(x)  # int64 (B,); oracle.queries == len(x)
    """

    def __init__(self, model: nn.Module, *, budget: int | None = None, chunk: int = 1024) -> None:
        if not callable(model):
            raise InputError(f"expected a model (callable), got {type(model).__name__}")
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 0):
            raise InputError(f"budget must be None or an integer >= 0, got {budget!r}")
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise InputError(f"chunk must be an integer >= 1, got {chunk!r}")
        self.budget = budget
        self.queries = 0
        self.num_classes: int | None = None  # learned from the first answer's output width
        self._answer: Callable[[Tensor], Tensor] = _label_fn(model, chunk, self)

    @property
    def remaining(self) -> int | None:
        """Queries left before the budget (None when unlimited)."""
        return None if self.budget is None else self.budget - self.queries

    def __call__(self, x: Tensor) -> Tensor:
        """Labels (int64, shape (B,)) for a batch x of shape (B, ...)."""
        if not isinstance(x, Tensor) or x.dim() < 2 or not x.is_floating_point():
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise InputError(f"expected a floating-point query batch (B, C, H, W), got {shape}")
        n = int(x.shape[0])
        if self.budget is not None and self.queries + n > self.budget:
            raise QueryBudgetError(f"query budget exceeded: expected at most {self.budget} queries, "
                                   f"got {self.queries} used + {n} asked")
        labels = self._answer(x.detach())
        self.queries += n
        return labels


def _label_fn(model: nn.Module, chunk: int, oracle: LabelOracle) -> Callable[[Tensor], Tensor]:
    def answer(x: Tensor) -> Tensor:
        out = []
        with torch.no_grad():
            for part in x.split(chunk):
                logits = model(part)
                if oracle.num_classes is None:
                    oracle.num_classes = int(logits.shape[1])
                out.append(logits.argmax(dim=1))
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.int64, device=x.device)

    return answer


__all__ = ["LabelOracle", "QueryBudgetError"]
