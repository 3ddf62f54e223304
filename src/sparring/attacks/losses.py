"""The loss table: per-sample objectives an attack maximizes.

Untargeted objectives grow as the true class loses; targeted ones grow as the target wins.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from ..errors import UnknownNameError


def _other_max(logits: Tensor, labels: Tensor) -> Tensor:
    return logits.scatter(1, labels[:, None], float("-inf")).amax(dim=1)


def _label_logit(logits: Tensor, labels: Tensor) -> Tensor:
    return logits.gather(1, labels[:, None]).squeeze(1)


def ce(logits: Tensor, labels: Tensor, targeted: bool) -> Tensor:
    """Cross-entropy (Goodfellow et al. 2015): raise it for the label, lower it for a target."""
    loss = F.cross_entropy(logits, labels, reduction="none")
    return -loss if targeted else loss


def margin(logits: Tensor, labels: Tensor, targeted: bool) -> Tensor:
    """CW margin on logits (Carlini & Wagner 2017, arXiv:1608.04644), unclamped: max_{j != y} Z_j - Z_y
    (untargeted), Z_t - max_{j != t} Z_j (targeted, labels = targets). It is > 0 exactly when the goal is
    met (ties aside); its negative is CW's logit gap."""
    gap = _other_max(logits, labels) - _label_logit(logits, labels)
    return -gap if targeted else gap


def logit(logits: Tensor, labels: Tensor, targeted: bool) -> Tensor:
    """The raw logit of the target (raised) or of the label (lowered), as in the blur article."""
    value = _label_logit(logits, labels)
    return value if targeted else -value


def dlr(logits: Tensor, labels: Tensor, targeted: bool, *, true_labels: Tensor | None = None) -> Tensor:
    """Difference of Logits Ratio (Croce & Hein 2020, arXiv:2003.01690), shift and scale invariant.

    Untargeted: -(z_y - max_{i!=y} z_i) / (z_pi1 - z_pi3), pi the logits sorted in decreasing order.
    Targeted (labels = targets t): -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2) with true_labels y;
    without true_labels, max_{i!=t} z_i stands for z_y. Fewer than 3 (4) classes: the scale falls
    back to z_pi1 - z_pi_last (3 classes) or 1 (2 classes).
    """
    top = logits.sort(dim=1, descending=True).values
    k = logits.shape[1]
    third = top[:, 2] if k >= 3 else top[:, 0] - 1
    scale = top[:, 0] - third
    if targeted:
        if k >= 4:
            scale = top[:, 0] - (top[:, 2] + top[:, 3]) / 2
        rival = _other_max(logits, labels) if true_labels is None else _label_logit(logits, true_labels)
        return (_label_logit(logits, labels) - rival) / (scale + 1e-12)
    return -(_label_logit(logits, labels) - _other_max(logits, labels)) / (scale + 1e-12)


LOSSES: dict[str, Callable[..., Tensor]] = {"ce": ce, "margin": margin, "cw": margin, "logit": logit, "dlr": dlr}


def get_loss(name: str) -> Callable[[Tensor, Tensor, bool], Tensor]:
    """Look up a loss by name ("ce", "margin"/"cw", "logit", "dlr")."""
    if name not in LOSSES:
        raise UnknownNameError(f"unknown loss {name!r}: expected one of {', '.join(LOSSES)}")
    return LOSSES[name]


def is_adversarial(logits: Tensor, labels: Tensor, targeted: bool) -> Tensor:
    """Per-sample success: prediction == target (targeted) or != label (untargeted)."""
    pred = logits.argmax(dim=1)
    return pred == labels if targeted else pred != labels
