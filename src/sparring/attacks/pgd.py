"""Iterative attacks: BIM, PGD (L1, L2, Linf) and the iterative L2-normalized attack."""

from __future__ import annotations

from torch import Tensor, nn

from ..errors import InputError
from ..rng import Generators
from ..threat import Norm, ThreatModel
from .checks import check_positive
from .loop import gradient_loop
from .registry import ATTACKS


def _default_size(threat: ThreatModel, steps: int, step_size: float | None) -> float:
    """An absolute step: the one given, else 2.5 * eps / steps (Madry et al.'s choice)."""
    return 2.5 * threat.eps / max(int(steps), 1) if step_size is None else step_size


@ATTACKS.register("pgd", kind="budget", norms=("linf", "l2", "l1"), needs_grad=True, targeted="optional",
                  paper="Madry et al. 2018, arXiv:1706.06083")
def pgd(model: nn.Module, x: Tensor, y: Tensor, *, threat: ThreatModel, steps: int = 40,
        step_size: float | None = None, random_start: bool = True, restarts: int = 1,
        targeted: bool = False, loss: str = "ce", early_stop: bool = True,
        generator: Generators = None) -> Tensor:
    """Projected gradient descent in L1, L2 or Linf, with random start and restarts.

    Madry et al., "Towards deep learning models resistant to adversarial attacks", arXiv:1706.06083.
    step_size is absolute (default 2.5 * eps / steps); loss is "ce" or "margin" (CW);
    restarts re-run only the samples not yet fooled; early_stop (default) stops attacking a sample
    once it is fooled, which saves passes and changes no robust accuracy (a fooled sample stays
    fooled); early_stop=False runs every step on every sample (e.g. for adversarial training).
        >>> x_adv = pgd(model, x, y, threat=ThreatModel(Norm.LINF, 8 / 255), steps=20, generator=g)
    """
    return gradient_loop(model, x, y, threat=threat, steps=steps, step_size=_default_size(threat, steps, step_size),
                         random_start=random_start, restarts=restarts, targeted=targeted, loss=loss,
                         early_stop=early_stop, generator=generator)


@ATTACKS.register("bim", kind="budget", norms=("linf", "l2", "l1"), needs_grad=True, targeted="optional",
                  paper="Kurakin et al. 2017, arXiv:1607.02533")
def bim(model: nn.Module, x: Tensor, y: Tensor, *, threat: ThreatModel, steps: int = 10,
        step_size: float | None = None, targeted: bool = False, loss: str = "ce", early_stop: bool = True,
        generator: Generators = None) -> Tensor:
    """Basic iterative method: PGD from the clean input, no random start.

    Kurakin, Goodfellow, Bengio, "Adversarial examples in the physical world", arXiv:1607.02533.
        >>> x_adv = bim(model, x, y, threat=ThreatModel(Norm.LINF, 0.1), steps=10)
    """
    return gradient_loop(model, x, y, threat=threat, steps=steps, step_size=_default_size(threat, steps, step_size),
                         targeted=targeted, loss=loss, early_stop=early_stop, generator=generator)


@ATTACKS.register("iterative-l2", kind="minimal", norms=("l2",), needs_grad=True, targeted="optional",
                  paper="blur article (seeds/000); Szegedy-style gradient steps",
                  test_params={"steps": 20, "step_size": 0.1, "targeted": False})
def iterative_l2(model: nn.Module, x: Tensor, y: Tensor, *, threat: ThreatModel | None = None,
                 steps: int = 1000, step_size: float = 0.1, targeted: bool = True, loss: str = "ce",
                 generator: Generators = None) -> Tensor:
    """The iterative L2-normalized attack: x <- x + step_size * g / ||g||_2 until the goal is met.

    From "Protecting networks against adversarial attacks" (the blur article): toward a chosen
    target class (targeted=True, y = targets) or away from the label; each sample stops as soon
    as it is classified as the target (or misclassified), at most `steps` steps; unbounded in
    norm unless threat.eps is finite; always kept inside the box.
        >>> x_adv = iterative_l2(model, x, targets, steps=1000, step_size=0.1)
    """
    threat = ThreatModel(Norm.L2, float("inf")) if threat is None else threat
    if threat.norm is not Norm.L2:
        raise InputError(f"iterative-l2 supports norm l2, got {threat.norm.value}")
    size = check_positive("step_size", step_size)
    return gradient_loop(model, x, y, threat=threat, steps=steps, step_size=size, targeted=targeted,
                         loss=loss, early_stop=True, generator=generator)
