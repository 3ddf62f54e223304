"""Certified accuracy of a randomized-smoothing classifier at L2 radii (Cohen et al. 2019), for `sparring certify`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from ..defenses import SmoothedClassifier, certified_accuracy, clopper_pearson_lower
from ..errors import InputError
from ..rng import SampleGenerators

__all__ = ["certify_report"]


def certify_report(base: nn.Module, x: Tensor, y: Tensor, *, sigma: float, num_classes: int,
                   radii: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0), n0: int = 100, n: int = 10_000,
                   alpha: float = 0.001, batch_size: int = 1000, seed: int = 0) -> dict[str, Any]:
    """CERTIFY every image of x with the smoothed `base` and summarise: certified accuracy at each radius
    (correct and certified at least that radius; abstentions count as wrong), the abstention rate, the
    largest radius n draws can certify (all agreeing), and seconds per image. Noise comes from
    SampleGenerators(seed, range(N)), so an image's result does not depend on the batch.
        >>> report = certify_report(model, x, y, sigma=0.25, num_classes=10, radii=(0.25, 0.5))
        >>> report["certified"]["0.5"]
    """
    if not len(radii):
        raise InputError("expected at least one radius, got none")
    smoothed = SmoothedClassifier(base.eval(), sigma, num_classes)
    tick = time.perf_counter()
    classes, found = smoothed.certify(x, n0=n0, n=n, alpha=alpha, batch_size=batch_size,
                                      generator=SampleGenerators(seed, range(len(x))))
    seconds = time.perf_counter() - tick
    from scipy.stats import norm

    best = float(sigma * norm.ppf(clopper_pearson_lower(n, n, alpha)))
    return {"sigma": float(sigma), "n0": n0, "n": n, "alpha": alpha, "images": len(x),
            "certified": {f"{float(r):g}": certified_accuracy(classes, found, y, float(r)) for r in radii},
            "abstained": float((classes == -1).float().mean()), "max_radius": best,
            "seconds_per_image": seconds / len(x), "classes": classes.tolist(), "radii": found.tolist()}
