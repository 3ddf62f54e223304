"""The records `sparring run` adds to the runner's cells: the audit of each unit and its latent projection."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..attacks import ATTACKS
from ..config import Config, parse_eps
from ..defenses import PENULTIMATE, LatentNN, latent_features, latent_view
from ..errors import SparringError
from ..evaluate import AttackSpec
from ..evaluate.audit import audit
from ..records import Record
from ..rng import SampleGenerators
from ..threat import Norm, ThreatModel
from ..util import attack_view, write_atomic

__all__ = ["LATENT_POINTS", "audit_record", "latent_record"]

LATENT_POINTS = 500


def audit_record(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: Config, device: str,
                 context: dict[str, Any]) -> Record:
    """The audit of `sparring run` as one results.jsonl record (cell "audit"). A failure of the audit
    itself is recorded (verdict "error" and the message) rather than raised: the cells are already saved."""
    a = config.audit
    n = min(a.n or len(y), len(y))
    labels = a.eps or config.evaluate.eps
    eps = {label: parse_eps(label)[1] for label in labels}
    base = {"kind": "audit", "cell": "audit", **context, "norm": a.norm, "n": n, "eps_labels": list(eps)}
    tick = time.perf_counter()
    try:
        threat = ThreatModel(Norm.parse(a.norm), max(eps.values()))
        report = audit(model.to(device), x[:n].to(device), y[:n].to(device), threat=threat, eps=list(eps.values()),
                       steps=a.steps, restarts=a.restarts, square_queries=a.square_queries, seed=config.seed)
    except (SparringError, RuntimeError, ValueError) as exc:
        return {**base, "verdict": "error", "error": str(exc).splitlines()[0], "time_s": time.perf_counter() - tick}
    if config.evaluate.precision != "fp32":  # the cells' attacks ran in reduced precision; the audit's in fp32
        report["checks"].append({"name": "attack precision", "status": "warn", "cause": "", "fix": "",
                                 "evidence": f"the attack cells ran under {config.evaluate.precision} autocast; the "
                                             "audit's attacks ran in fp32: compare its naive numbers with the cells"})
        if report["verdict"] == "pass":
            report["verdict"] = "warn"
    back = {v: k for k, v in eps.items()}
    by_label = {k: (None if d is None else {back.get(e, f"{e:g}"): v for e, v in d.items()})
                for k, d in (("naive", report["naive"]), ("adaptive", report["adaptive"]))}
    return {**base, "verdict": report["verdict"], "checks": report["checks"], **by_label,
            "changes": report["changes"], "time_s": time.perf_counter() - tick}


def latent_record(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: AttackSpec, seed: int, device: str,
                  out: Path, name: str, context: dict[str, Any]) -> Record:
    """2-D PCA of the latent space (the 1-NN's layer for a contrastive model, else the input of the last
    Linear) for the first LATENT_POINTS images, clean and attacked by `spec` at its first eps; the
    coordinates go to out/name (tensors; the first untargeted budget attack of the run), the record names the
    file and the mean latent displacement."""
    net, layer = (model.model, model.layer) if isinstance(model, LatentNN) else (model, PENULTIMATE)
    m = min(LATENT_POINTS, len(y))
    x, y = x[:m], y[:m]
    label, eps = spec.eps[0]
    attacked = attack_view(model)
    x_adv = ATTACKS.get(spec.name)(attacked.to(device), x.to(device), y.to(device), threat=ThreatModel(spec.norm, eps),
                                  generator=SampleGenerators(seed, torch.arange(m)), **spec.call_kwargs())
    x_adv = x_adv.detach().cpu()
    view = latent_view(net, layer, x, y, x_adv=x_adv, seed=seed)
    z, z_adv = latent_features(net, layer, x), latent_features(net, layer, x_adv)
    centroids = torch.stack([z[y == k].mean(0) for k in y.unique()])
    spread = float(torch.cdist(centroids, centroids).sum() / max(1, len(centroids) * (len(centroids) - 1)))
    buffer = io.BytesIO()
    torch.save({"clean": torch.as_tensor(view["clean"], dtype=torch.float32),
                "adversarial": torch.as_tensor(view["adversarial"], dtype=torch.float32), "labels": y.clone()}, buffer)
    write_atomic(out / name, buffer.getvalue())
    return {"kind": "latent", "cell": "latent", **context, "file": name, "method": "pca", "layer": str(layer),
            "n": m, "attack": spec.label, "norm": spec.norm.value, "eps": eps, "eps_label": label,
            "mean_shift": float((z_adv - z).norm(dim=1).mean()), "mean_centroid_distance": spread}
