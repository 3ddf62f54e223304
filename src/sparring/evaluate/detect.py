"""Measure a detector of adversarial inputs: ROC AUC and detection rate at a false-positive rate against
an attack on the classifier, then a joint attack that must fool classifier and detector together.

`sparring detect` and benchmarks/defense_adaptive.py call `detection_report`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..attacks import ATTACKS, pgd
from ..defenses import Detector, DetectorGuard, detection_rate_at_fpr, roc_auc, threshold_at_fpr
from ..errors import InputError
from ..rng import SampleGenerators, derive
from ..threat import ThreatModel
from .runner import predict

__all__ = ["detection_report", "joint_attack"]


def _accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> float:
    return int((predict(model, x, batch_size, x.device).argmax(1) == y.cpu()).sum()) / len(x)


def joint_attack(guard: DetectorGuard, x: Tensor, y: Tensor, *, threat: ThreatModel, steps: int = 40,
                 step_size: float | None = None, targets: int = 3, seed: int = 0, offset: int = 0) -> Tensor:
    """Targeted PGD with the margin loss on the guard's K+1 logits (the last one = "detected") toward the
    `targets` likeliest wrong classes of each clean image in turn, through guard.for_attack() (BPDA for a
    non-differentiable detector). Per sample: the first example that is classified as its target and not
    flagged, else the last one tried (Carlini & Wagner 2017, arXiv:1705.07263). Random starts: row i
    uses SampleGenerators(derive(seed, "joint attack", k), [offset + i]) for its k-th target, so chunking
    changes nothing.
        >>> x_adv = joint_attack(DetectorGuard(model, det), x, y, threat=ThreatModel(Norm.LINF, 0.3))
    """
    if isinstance(targets, bool) or not isinstance(targets, int) or targets < 1:
        raise InputError(f"expected targets to be an integer >= 1, got {targets!r}")
    attackable, best = guard.for_attack(), x.clone()
    with torch.no_grad():
        order = guard.model(x).scatter(1, y[:, None], float("-inf")).argsort(dim=1, descending=True)
    done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for k in range(min(targets, order.shape[1] - 1)):
        rows = (~done).nonzero().flatten()
        if len(rows) == 0:
            break
        x_adv = pgd(attackable, x[rows], order[rows, k], threat=threat, steps=steps, step_size=step_size,
                    targeted=True, loss="margin",
                    generator=SampleGenerators(derive(seed, "joint attack", k), (rows + offset).tolist())).detach()
        best[rows] = x_adv
        done[rows] = guard.fooled(x_adv, y[rows])
    return best


def detection_report(model: nn.Module, detector: Detector, x: Tensor, y: Tensor, *, threat: ThreatModel,
                     attack: str = "pgd", attack_params: dict[str, Any] | None = None, fpr: float = 0.05,
                     joint: bool = True, joint_targets: int = 3, seed: int = 0,
                     batch_size: int = 256) -> dict[str, Any]:
    """Score clean x and attacked x; the threshold is set at `fpr` on these clean scores (and kept on
    the detector). Rows: the attack on the classifier alone, then (joint=True) joint_attack with the
    attack's steps and step_size. Each row: classifier accuracy on the examples, ROC AUC, detection rate
    at the threshold, and "evaded": the fraction misclassified and not flagged (what an attacker wants).
    Random starts come from SampleGenerators(derive(seed, "detection attack"), range(N)), so a row does not
    depend on batching.
        >>> report = detection_report(model, FeatureSqueezing(model, bits=1), x, y,
        ...                           threat=ThreatModel(Norm.LINF, 0.3), attack_params={"steps": 40})
        >>> report["rows"][0]["auc"]
    """
    if not hasattr(detector, "scores") or not hasattr(detector, "threshold"):
        raise InputError(f"expected a sparring detector (scores(), threshold), got {type(detector).__name__}")
    params = dict(attack_params or {})
    fn = ATTACKS.get(attack)
    clean = detector.scores(x)
    detector.threshold = threshold_at_fpr(clean, fpr)
    guard = DetectorGuard(model, detector)
    parts = [fn(model, x[i : i + batch_size], y[i : i + batch_size], threat=threat,
                generator=SampleGenerators(derive(seed, "detection attack"), range(i, min(i + batch_size, len(x)))),
                **params).detach()
             for i in range(0, len(x), batch_size)]  # fmt: skip
    examples = [("attack on the classifier", torch.cat(parts))]
    if joint:
        joint_parts = [joint_attack(guard, x[i : i + batch_size], y[i : i + batch_size], threat=threat,
                                    steps=int(params.get("steps", 40)), step_size=params.get("step_size"),
                                    targets=joint_targets, seed=seed, offset=i) for i in range(0, len(x), batch_size)]
        examples.append(("joint attack on classifier + detector", torch.cat(joint_parts)))
    rows = []
    for label, x_adv in examples:
        scores = detector.scores(x_adv)
        with torch.no_grad():
            evaded = sum(int(guard.fooled(x_adv[i : i + batch_size], y[i : i + batch_size]).sum())
                         for i in range(0, len(x), batch_size)) / len(x)  # fmt: skip
        rows.append({"examples": label, "accuracy": _accuracy(model, x_adv, y, batch_size),
                     "auc": roc_auc(clean, scores), "detected": detection_rate_at_fpr(clean, scores, fpr),
                     "evaded": evaded})
    return {"clean_accuracy": _accuracy(model, x, y, batch_size), "threshold": float(detector.threshold),
            "fpr": fpr, "n": len(x), "rows": rows}
