"""BPDA and Defended: attack a non-differentiable defense through its differentiable surrogate.

Backward Pass Differentiable Approximation (Athalye, Carlini, Wagner 2018, arXiv:1802.00420):
run the real defense forward, back-propagate through an approximation g(x) ~ f(x).
"""

from __future__ import annotations

from torch import Tensor, nn

from ..errors import InputError
from .base import is_differentiable, is_random


class BPDA(nn.Module):
    """Forward: exactly module(x). Backward: the gradient of module.surrogate()(x).

    Athalye et al. 2018, arXiv:1802.00420. The straight-through trick in its exact form:
    out = f(x).detach() + (g(x) - g(x).detach()); the added term is exactly 0 in the forward pass,
    so the values are f's bit for bit (s + (f - s).detach() can differ from f in the last bit).
    module: a module with surrogate() (every defense in preprocess.py).
        >>> bit = BPDA(BitDepth(3))
        >>> grad, = torch.autograd.grad(net(bit(x)).sum(), x)  # gradient of net at BitDepth(3)(x)
    """

    differentiable = True

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        surrogate = getattr(module, "surrogate", None)
        if not callable(surrogate):
            raise InputError(f"expected a module with a surrogate() method, got {type(module).__name__}")
        self.module, self.approx = module, surrogate()
        self.random = is_random(module)

    def forward(self, x: Tensor) -> Tensor:
        out, s = self.module(x), self.approx(x)
        if out.shape != s.shape:
            raise InputError(f"expected the surrogate to keep the shape {tuple(out.shape)}, got {tuple(s.shape)}")
        return out.detach() + (s - s.detach())


def bpda(module: nn.Module) -> nn.Module:
    """The BPDA version of a defense: its forward values, its surrogate's gradient.

    Athalye et al. 2018, arXiv:1802.00420. A module that declares differentiable = True is its own
    surrogate and comes back unchanged; an nn.Sequential comes back with each non-differentiable
    child wrapped; a module without the flag and without non-differentiable children, unchanged.
    module: a defense from preprocess.py, or an nn.Sequential holding some.
        >>> attackable = bpda(nn.Sequential(Normalize(mean, std), MedianBlur(3)))
        >>> x_adv = pgd(nn.Sequential(attackable, net), x, y, threat=ThreatModel(Norm.LINF, 8 / 255))
    """
    flag = getattr(module, "differentiable", None)
    if flag is True or (flag is None and is_differentiable(module)):
        return module
    if flag is False:
        return BPDA(module)
    if isinstance(module, nn.Sequential):
        return nn.Sequential(*(bpda(child) for child in module))
    raise InputError(f"expected a defense with surrogate() or an nn.Sequential of them, got {type(module).__name__}")


class Defended(nn.Module):
    """A model behind a preprocessing defense: forward(x) = model(preprocess(x)).

    Evaluate with the module itself; attack through for_attack(), which swaps in the BPDA version
    of a non-differentiable preprocess (Athalye et al. 2018, arXiv:1802.00420), so a defense that
    only masks gradients is attacked honestly. preprocess: an input filter (preprocess.py) or an
    nn.Sequential; model: a classifier returning logits (B, K).
        >>> defended = Defended(JPEG(75), net)
        >>> x_adv = pgd(defended.for_attack(), x, y, threat=ThreatModel(Norm.LINF, 8 / 255))
    """

    def __init__(self, preprocess: nn.Module, model: nn.Module) -> None:
        super().__init__()
        for name, m in (("preprocess", preprocess), ("model", model)):
            if not isinstance(m, nn.Module):
                raise InputError(f"{name}: expected an nn.Module, got {type(m).__name__}")
        self.preprocess, self.model = preprocess, model

    @property
    def differentiable(self) -> bool:
        return is_differentiable(self.preprocess) and is_differentiable(self.model)

    @property
    def random(self) -> bool:
        return is_random(self.preprocess) or is_random(self.model)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self.preprocess(x))

    def unwrap(self) -> nn.Module:
        """The model behind the preprocess (sparring.defenses.build.network_and_parts walks down with it)."""
        return self.model

    def trained_parts(self) -> dict[str, Tensor]:
        """The trained tensors of the preprocess modules that have some (the reformer's autoencoder)."""
        modules = self.preprocess if isinstance(self.preprocess, nn.Sequential) else [self.preprocess]
        parts: dict[str, Tensor] = {}
        for m in modules:
            held = getattr(m, "trained_parts", None)
            if callable(held):
                parts.update(held())
        return parts

    def for_attack(self) -> Defended:
        """This model when the preprocess is differentiable, else one whose preprocess is bpda(preprocess)."""
        return self if is_differentiable(self.preprocess) else Defended(bpda(self.preprocess), self.model)


__all__ = ["BPDA", "Defended", "bpda", "is_differentiable", "is_random"]
