"""Transfer attacks: craft on surrogate model(s) with any registered white-box attack.

The adversarial batch is evaluated on the target by the runner; the target is never queried
here. Ensembles average the surrogates' logits (Liu et al. 2017, arXiv:1611.02770).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..rng import Generators
from ..threat import ThreatModel
from .checks import check_batch
from .registry import ATTACKS

Surrogate = nn.Module | Sequence[nn.Module] | str  # a str only as "self"


class Ensemble(nn.Module):
    """Mean of the logits of several models (same input, same number of classes)."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(models)

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([m(x) for m in self.members]).mean(dim=0)


def craft_on(surrogate: nn.Module, x: Tensor, y: Tensor, *, threat: ThreatModel, craft: str,
             craft_params: Mapping[str, Any] | None, targeted: bool, generator: Generators) -> Tensor:
    """Run the registered white-box attack `craft` on `surrogate` with `craft_params`."""
    if not isinstance(craft, str) or craft not in ATTACKS:
        ATTACKS.get(str(craft))  # raises UnknownNameError with "did you mean"
    meta = ATTACKS.meta(craft)
    if not meta.get("needs_grad") or meta["kind"] not in ("budget", "minimal"):
        raise InputError(f"craft must be a white-box gradient attack (kind budget or minimal), got {craft!r}")
    if not isinstance(craft_params, Mapping | None):
        raise InputError(f"craft_params must be a mapping of hyperparameters, got {type(craft_params).__name__}")
    params = dict(craft_params or {})
    fn = ATTACKS.get(craft)
    accepted = inspect.signature(fn).parameters
    unknown = sorted(set(params) - set(accepted) | ({"threat", "generator"} & set(params)))
    if unknown:
        raise InputError(f"craft attack {craft} has no parameter {unknown[0]!r} (accepted: "
                         f"{', '.join(k for k in accepted if k not in ('model', 'x', 'y', 'threat', 'generator'))})")
    if targeted and meta["targeted"] == "never":
        raise InputError(f"craft attack {craft} is untargeted by design, got targeted=True")
    if "targeted" in accepted:
        params["targeted"] = targeted
    if meta["kind"] == "budget" and not threat.bounded:
        raise InputError(f"craft attack {craft} needs a finite eps, got eps=inf")
    x_adv = fn(surrogate, x, y, threat=threat, generator=generator, **params)
    return threat.project(x_adv.detach(), x.detach()) if threat.bounded else threat.clamp(x_adv.detach())


def resolve_surrogate(surrogate: Surrogate | None, model: nn.Module) -> nn.Module:
    """A module for a module, an Ensemble for a list of them, the target itself for "self".

    Names and paths of models are resolved above the attacks (sparring.experiment.resolve_model, which the
    CLI and configs use for the attack's model parameters): attacks never load models.
    """
    if isinstance(surrogate, nn.Module):
        return surrogate
    if surrogate == "self":
        return model
    if isinstance(surrogate, Sequence) and not isinstance(surrogate, str) and surrogate \
            and all(isinstance(m, nn.Module) for m in surrogate):
        return surrogate[0] if len(surrogate) == 1 else Ensemble(list(surrogate))
    if isinstance(surrogate, str):
        raise InputError(f"expected surrogate= a module, a list of modules or 'self', got the name {surrogate!r}: "
                         "resolve it with sparring.experiment.resolve_model (the CLI and configs do)")
    raise InputError("expected surrogate= a module, a non-empty list of modules or 'self', "
                     f"got {type(surrogate).__name__}")


@ATTACKS.register("transfer", kind="transfer", norms=("linf", "l2", "l1"), needs_grad=False, targeted="optional",
                  paper="Papernot et al. 2016, arXiv:1605.07277; Liu et al. 2017 (ensembles), arXiv:1611.02770",
                  test_params={"surrogate": "self", "craft": "pgd", "craft_params": {"steps": 3}},
                  model_params=("surrogate",))
def transfer(model: nn.Module, x: Tensor, y: Tensor, *, threat: ThreatModel, surrogate: Surrogate | None = None,
             craft: str = "pgd", craft_params: Mapping[str, Any] | None = None, targeted: bool = False,
             generator: Generators = None) -> Tensor:
    """Craft adversarial examples on surrogate model(s) and hand them to the target unchanged.

    Papernot, McDaniel, Goodfellow, "Transferability in machine learning", arXiv:1605.07277;
    Liu et al., "Delving into transferable adversarial examples", arXiv:1611.02770 (ensembles).
    Args: surrogate: an nn.Module, a list of modules (ensemble: mean logits), or "self" (the
    target itself: the white-box upper bound); from the CLI or a config, a pretrained alias or a saved
    model path, resolved to a module before the call; craft / craft_params: a registered white-box
    attack and its hyperparameters; the target `model` is never called.
        >>> x_adv = transfer(target, x, y, threat=ThreatModel(Norm.LINF, 0.3), surrogate=[m1, m2],
        ...                  craft="pgd", craft_params={"steps": 20}, generator=g)
    """
    check_batch(x, y, threat)
    if surrogate is None:
        raise InputError("transfer needs surrogate=: a module, a list of modules, a model spec or 'self'")
    net = resolve_surrogate(surrogate, model)
    return craft_on(net, x, y, threat=threat, craft=craft, craft_params=craft_params, targeted=targeted,
                    generator=generator)


__all__ = ["Ensemble", "craft_on", "resolve_surrogate", "transfer"]
