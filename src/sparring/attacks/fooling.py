"""Fooling images (false positives): inputs unrecognizable to a human that the model assigns
to a chosen class with high confidence, grown from noise or a blank image by gradient ascent.

Nguyen, Yosinski, Clune, "Deep neural networks are easily fooled", arXiv:1412.1897 (their
gradient-ascent variant); the slides' "false-positive" attack (Yuan et al. 2019, arXiv:1712.07107).
Not registered in ATTACKS: it takes no input batch x.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..rng import Generators, uniform
from ..threat import Norm, ThreatModel
from ..util import model_device, model_dtype, rows
from .checks import check_labels, check_positive, check_positive_int

STARTS = ("noise", "blank", "zeros")


def fooling_images(model: nn.Module, *, targets: Sequence[int] | Tensor, shape: Sequence[int],
                   start: str = "noise", steps: int = 500, step_size: float = 0.01, confidence: float = 0.99,
                   bounds: tuple[float, float] = (0.0, 1.0), generator: Generators = None) -> Tensor:
    """One image per target class that the model gives that class with probability >= confidence.

    Nguyen et al., arXiv:1412.1897; Yuan et al., arXiv:1712.07107 (false positives).
    Args: targets: the target classes (one image each); shape: (C, H, W); start: "noise"
    (uniform in bounds), "blank" (mid-gray) or "zeros" (the lower bound); steps: at most this
    many sign steps of step_size raising log p(target); each image stops once its target's
    softmax probability reaches `confidence` (images that never reach it are returned as they
    end; check with model(images).softmax(1)). Returns images in bounds, shape (N, C, H, W).
        >>> images = fooling_images(model, targets=range(10), shape=(1, 28, 28), generator=g)
        >>> model(images).softmax(1).amax(1)  # >= 0.99 each
    """
    classes = torch.as_tensor(targets)
    if classes.dim() != 1 or classes.numel() == 0 or classes.is_floating_point() or classes.dtype == torch.bool:
        raise InputError(f"expected targets as a non-empty sequence of class indices, got {targets!r}")
    dims = tuple(int(s) for s in shape)
    if len(dims) < 1 or min(dims) < 1:
        raise InputError(f"expected shape (C, H, W) with positive sizes, got {tuple(shape)!r}")
    if start not in STARTS:
        raise InputError(f"start must be one of {', '.join(STARTS)}, got {start!r}")
    steps, step_size = check_positive_int("steps", steps), check_positive("step_size", step_size)
    if not 0.0 < float(confidence) < 1.0:
        raise InputError(f"confidence must be in (0, 1), got {confidence!r}")
    box = ThreatModel(Norm.LINF, math.inf, bounds)
    lo, hi = box.bounds
    like = torch.empty(len(classes), *dims, device=model_device(model), dtype=model_dtype(model))
    if start == "noise":
        x = lo + (hi - lo) * uniform(generator, like)
    else:
        x = torch.full_like(like, (lo + hi) / 2 if start == "blank" else lo)
    wanted = classes.to(device=like.device, dtype=torch.int64)
    threshold = math.log(float(confidence))
    with torch.enable_grad():
        for step in range(steps + 1):
            xr = x.detach().requires_grad_(True)
            log_probs = model(xr).log_softmax(dim=1)
            if step == 0:
                check_labels(wanted, log_probs.shape[1])
            picked = log_probs.gather(1, wanted[:, None]).squeeze(1)
            todo = picked.detach() < threshold
            if step == steps or not bool(todo.any()):
                break
            (grad,) = torch.autograd.grad(picked.sum(), xr)
            moved = box.clamp(xr.detach() + box.step(grad, step_size))
            x = torch.where(rows(todo, xr), moved, xr.detach())
    return x.detach()


__all__ = ["STARTS", "fooling_images"]
