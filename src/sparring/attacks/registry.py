"""ATTACKS: every attack a config or the CLI can name, with its metadata.

Metadata keys: kind ("budget" stays within eps; "minimal" finds the smallest perturbation and
one run gives the whole curve; "blackbox"; "transfer"), norms (tuple of norm names),
needs_grad, targeted ("optional", "never" or "required"), paper, and test_params (small
hyperparameters that make the attack fast enough for the shared invariant suite in tests/).
"""

from __future__ import annotations

from collections.abc import Callable

from ..registry import Registry

ATTACKS: Registry[Callable[..., object]] = Registry("attack")
