"""The "strong" preset: an AutoAttack-style ensemble (Croce & Hein 2020, arXiv:2003.01690).

APGD-CE, then APGD-T (targeted DLR), then optionally a minimal-norm attack projected onto the
ball, then Square; each component runs only on the samples every earlier one left correctly
classified, so a sample fooled once stays fooled (the per-sample worst case).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..rng import Generators, SampleGenerators, derive, subset
from ..threat import Norm, ThreatModel
from .apgd import apgd_batch, apgd_targeted_batch
from .checks import check_batch, check_labels, check_positive_int
from .losses import ce, is_adversarial
from .registry import ATTACKS
from .square import square_batch

MINIMAL = {Norm.L2: "ddn", Norm.LINF: "deepfool"}
Component = Callable[[Tensor, Tensor, Tensor, Generators], tuple[Tensor, Tensor]]  # (x, y, logits, gen)


def fork(generator: Generators, component: int) -> Generators:
    """The generator of component k (0: APGD-CE, 1: APGD-T, 2: minimal, 3: Square).

    Per-sample streams get a fresh seed per component, derive(seed, "strong", k), so a component draws
    exactly what it would draw alone with fork(generator, k); a single torch.Generator is shared.
    """
    if isinstance(generator, SampleGenerators) and component:
        return SampleGenerators(derive(generator.seed, "strong", component), generator.indices)
    return generator


@ATTACKS.register("strong", kind="budget", norms=("linf", "l2"), needs_grad=True, targeted="never",
                  paper="AutoAttack ensemble, Croce & Hein 2020, arXiv:2003.01690; Square arXiv:1912.00049",
                  test_params={"steps": 5, "target_classes": 2, "queries": 30})
def strong(model: nn.Module, x: Tensor, y: Tensor, *, threat: ThreatModel, steps: int = 100, restarts: int = 2,
           target_classes: int = 4, queries: int = 2500, minimal: bool = False, batch_size: int | None = None,
           generator: Generators = None) -> Tensor:
    """AutoAttack-style ensemble: APGD-CE, APGD-T, [minimal attack], Square, worst case per sample.

    Croce & Hein, arXiv:2003.01690, with Square Attack (Andriushchenko et al., arXiv:1912.00049).
    steps, restarts: APGD iterations and restarts (APGD-CE, and APGD-T per target); target_classes:
    APGD-T targets; queries:
    Square's budget per sample; minimal: also run the registered minimal-norm attack ("ddn" for
    L2, "deepfool" for Linf), projected onto the eps ball. Fooled samples leave every component.
    batch_size: pass a whole evaluation set and each component runs over the samples still robust
    in chunks of at most this many (as AutoAttack does), so the few hard samples of the set run
    as one batch instead of one small batch per chunk; results per sample are the same.
    The defaults (2 APGD restarts, 4 targets instead of AutoAttack's 9, 2500 queries instead of
    5000, no FAB-T) matched AutoAttack's robust accuracy within seed noise in about 0.4x its CPU
    time on LeNet/MNIST and ResNet-20/CIFAR-10: benchmarks/strong_vs_autoattack.py.
        >>> x_adv = strong(model, x, y, threat=ThreatModel(Norm.LINF, 8 / 255), generator=g)
    """
    check_batch(x, y, threat)
    if threat.norm not in MINIMAL:
        raise InputError(f"strong supports norms linf and l2, got {threat.norm.value}")
    for name, value in (("steps", steps), ("restarts", restarts), ("target_classes", target_classes),
                        ("queries", queries)):
        check_positive_int(name, value)
    if batch_size is not None:
        check_positive_int("batch_size", batch_size)
    minimal_fn = ATTACKS.get(MINIMAL[threat.norm]) if minimal else None
    x, y = x.detach(), y.to(device=x.device, dtype=torch.int64)
    chunk = batch_size or x.shape[0]
    with torch.no_grad():
        logits = torch.cat([model(x[i:i + chunk]) for i in range(0, x.shape[0], chunk)])
    check_labels(y, logits.shape[1])
    out, hit = x.clone(), logits.argmax(dim=1) != y

    def run(component: int, attack: Component) -> None:
        todo = (~hit).nonzero().flatten()
        for start in range(0, todo.numel(), chunk):
            rows = todo[start:start + chunk]
            mask = torch.zeros_like(hit)
            mask[rows] = True
            pts, ok = attack(x[rows], y[rows], logits[rows], subset(fork(generator, component), mask))
            keep = ok if component else torch.ones_like(ok)  # APGD-CE's best-loss points stand for the robust
            out[rows[keep]], hit[rows] = pts[keep], ok

    untargeted = lambda z, r, ys: is_adversarial(z, ys[r], False)  # noqa: E731
    run(0, lambda xs, ys, _, g: apgd_batch(model, xs, ys, threat=threat, steps=steps, restarts=restarts,
                                           objective=lambda z, r: ce(z, ys[r], False),
                                           success=lambda z, r: untargeted(z, r, ys), generator=g))
    run(1, lambda xs, ys, zs, g: apgd_targeted_batch(model, xs, ys, zs, threat=threat, steps=steps, restarts=restarts,
                                                     target_classes=target_classes, generator=g))
    if minimal_fn is not None:
        run(2, lambda xs, ys, _, g: _minimal(minimal_fn, model, xs, ys, threat, g))
    run(3, lambda xs, ys, _, g: square_batch(model, xs, ys, threat=threat, queries=queries, p_init=0.8,
                                             targeted=False, generator=g))
    return out


def _minimal(fn: Callable[..., Tensor], model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel,
             gen: Generators) -> tuple[Tensor, Tensor]:
    """A minimal-norm attack run unbounded, then projected onto the eps ball."""
    adv = fn(model, x, y, threat=ThreatModel(threat.norm, math.inf, threat.bounds), generator=gen)
    adv = threat.project(adv.detach(), x)
    with torch.no_grad():
        return adv, is_adversarial(model(adv), y, False)


__all__ = ["fork", "strong"]
