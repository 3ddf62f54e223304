"""A defense written as one file: the example the layers issue asked for (tests/test_plugins.py).

Contrast reduction in front of the model: x -> 0.5 + strength * (x - 0.5). It is registered from here alone;
the dist-info folder beside this file makes it an installed plugin (entry point group "sparring.defenses"),
so `sparring list defenses`, `sparring defend --defense example-contrast`, a config's [[defenses]] entry and
the defense invariant suite (tests/test_defense_invariants.py) all find it without another file edited.
"""

from __future__ import annotations

from torch import Tensor, nn

from sparring.defenses import DefenseSpec, Param, register
from sparring.errors import InputError


class Contrast(nn.Module):
    """0.5 + strength * (x - 0.5): differentiable, deterministic, keeps images in [0, 1] for strength <= 1."""

    differentiable = True
    random = False

    def __init__(self, strength: float = 0.5) -> None:
        super().__init__()
        if not 0 < strength <= 1:
            raise InputError(f"expected strength in (0, 1], got {strength!r}")
        self.strength = float(strength)

    def forward(self, x: Tensor) -> Tensor:
        return 0.5 + self.strength * (x - 0.5)

    def surrogate(self) -> nn.Module:
        return self


register(DefenseSpec(
    "example-contrast", kind="preprocess", differentiable=True, random=False,
    paper="an example for tests/test_plugins.py", description="contrast reduction in front of the model",
    target=Contrast, params=(Param("strength", "float", 0.5, "contrast factor in (0, 1]"),),
    front=lambda entry, parts: Contrast(**entry["params"])))
