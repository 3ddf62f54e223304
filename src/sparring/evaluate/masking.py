"""Find the layers that hide the gradient and route around them (BPDA with the identity).

A leaf module whose output has its input's shape but passes back no gradient (rounding, quantization,
a detach, a custom backward that returns zeros) makes every gradient attack blind. BPDA (Athalye,
Carlini, Wagner 2018, arXiv:1802.00420) keeps its forward values and back-propagates as if it were
the identity: the straight-through estimator.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from ..defenses import is_differentiable
from ..util import attack_view

__all__ = ["StraightThrough", "attackable", "zero_gradient_layers"]


class StraightThrough(nn.Module):
    """Forward: module(x) exactly. Backward: the identity (BPDA with g(x) = x, arXiv:1802.00420).
        >>> layer = StraightThrough(Quantize(4))
        >>> grad, = torch.autograd.grad(layer(x).sum(), x)  # all ones
    """

    differentiable = True

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x).detach() + (x - x.detach())


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if name and not any(True for _ in m.children())]


def zero_gradient_layers(model: nn.Module, x: Tensor) -> list[str]:
    """Names of leaf modules that keep their input's shape and pass back an all-zero (or no) gradient
    on the batch x, found with one forward pass and a random vector-Jacobian product per layer.
        >>> zero_gradient_layers(nn.Sequential(Quantize(4), net), x)
        ['0']
    """
    found: list[str] = []
    gen = torch.Generator(device=x.device).manual_seed(0)

    def probe(name: str) -> Any:
        def hook(module: nn.Module, inputs: tuple[Any, ...], out: Any) -> None:
            if not inputs or not isinstance(inputs[0], Tensor) or not isinstance(out, Tensor):
                return
            inp = inputs[0]
            if not inp.requires_grad or inp.shape != out.shape or not inp.is_floating_point():
                return
            if not out.requires_grad:
                found.append(name)
                return
            v = torch.randn(out.shape, generator=gen, device=out.device, dtype=out.dtype)
            (g,) = torch.autograd.grad(out, inp, v, retain_graph=True, allow_unused=True)
            if g is None or not bool(torch.isfinite(g).all()) or float(g.abs().max()) == 0.0:
                found.append(name)
        return hook

    handles = [m.register_forward_hook(probe(name)) for name, m in _leaves(model)]
    try:
        with torch.enable_grad():
            model(x.detach().clone().requires_grad_(True))
    finally:
        for h in handles:
            h.remove()
    return found


def attackable(model: nn.Module, x: Tensor) -> tuple[nn.Module, list[str]]:
    """(the model to attack, what was changed): for_attack() when a defense declares a BPDA surrogate,
    then every zero-gradient layer (zero_gradient_layers) wrapped in StraightThrough on a copy.
        >>> model_for_attack, changes = attackable(defended, x[:16])
    """
    changes: list[str] = []
    target = model
    if not is_differentiable(model) and attack_view(model) is not model:
        target = attack_view(model)
        changes.append("BPDA with the declared surrogates (for_attack)")
    names = zero_gradient_layers(target, x)
    if names:
        target = copy.deepcopy(target)
        for name in names:
            parent, _, leaf = name.rpartition(".")
            owner = target.get_submodule(parent) if parent else target
            setattr(owner, leaf, StraightThrough(getattr(owner, leaf)))
        changes.append("BPDA with the identity through " + ", ".join(
            f"{name} ({type(target.get_submodule(name).module).__name__})" for name in names))
    return target, changes
