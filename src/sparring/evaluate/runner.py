"""The evaluation runner: clean accuracy, then every (attack, eps) cell on the samples the model
still classifies correctly, then the per-sample worst case over attacks for each (norm, eps).

The runner, not the attacks, puts the model in eval mode, freezes its parameters, moves data to
the device, counts passes, times cells and computes metrics. Finished cells (by `cell` key) are
taken from `done` and not recomputed, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..attacks import ATTACKS
from ..distributed import Dist, current
from ..errors import InputError
from ..paths import inside
from ..precision import autocast, check_precision, exact_float32
from ..records import Record
from ..rng import SampleGenerators
from ..threat import ThreatModel
from ..util import attack_view, frozen, write_atomic
from .counting import Counter, CountingModel
from .metrics import confidence, confusion, pack_mask, perturbation_norms, rate, summarize, unpack_mask
from .specs import AttackSpec, choose_targets


def predict(model: nn.Module, x: Tensor, batch_size: int, device: torch.device) -> Tensor:
    """Logits for x in batches, under inference mode, returned on the CPU."""
    outs = []
    with torch.inference_mode():
        for start in range(0, x.shape[0], batch_size):
            outs.append(model(x[start:start + batch_size].to(device)).float().cpu())
    return torch.cat(outs) if outs else torch.empty(0)


def evaluate(model: nn.Module, x: Tensor, y: Tensor, attacks: list[AttackSpec], *, seed: int = 0,
             batch_size: int = 256, device: str | torch.device = "cpu", context: dict[str, Any] | None = None,
             done: dict[str, Record] | None = None, on_record: Callable[[Record], None] | None = None,
             gallery_dir: Path | None = None, gallery_size: int = 8, dist: Dist | None = None,
             precision: str = "fp32") -> list[Record]:
    """Evaluate `model` on (x, y) under every attack and eps; returns all records in order.

    Under torchrun (`dist`, default sparring.distributed.current()) each rank attacks its shard of the
    samples and every rank computes the same records; only rank 0 calls on_record and saves galleries.
    precision "bf16" / "fp16" autocasts the attacks (not the judging forward passes); such records say so.

    Example:
        >>> records = evaluate(model, x, y, [AttackSpec("pgd", Norm.LINF, (("8/255", 8 / 255),))])
    """
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise InputError(f"expected as many labels as images (and at least one), got {x.shape[0]} images, "
                         f"{y.shape[0]} labels")
    device = torch.device(device)
    dist = dist or current()
    check_precision(precision)
    if not dist.main:
        on_record, gallery_dir = None, None
    base = {"model": "model", "defense": "none", "dataset": "data", **(context or {})}
    done = dict(done or {})
    records: list[Record] = []

    def emit(record: Record) -> None:
        record = {**{k: base[k] for k in ("model", "defense", "dataset")}, **record}
        records.append(record)
        if record["cell"] not in done and on_record is not None:
            on_record(record)
        done[record["cell"]] = record

    with frozen(model), exact_float32(device):  # on a GPU: IEEE float32 (no TF32), deterministic kernels
        model.to(device)
        tick = time.perf_counter()
        logits = predict(model, x, batch_size, device)
        pred, conf = confidence(logits)
        correct = pred == y
        if int(y.min()) < 0 or int(y.max()) >= logits.shape[1]:
            raise InputError(f"expected labels in [0, {logits.shape[1] - 1}], got values in "
                             f"[{int(y.min())}, {int(y.max())}]")
        emit({"kind": "clean", "cell": "clean", "n": len(y), "n_correct": int(correct.sum()),
              "accuracy": int(correct.sum()) / len(y), "mean_confidence": float(conf.mean()),
              "confusion": confusion(y, pred, logits.shape[1]), "time_s": time.perf_counter() - tick})
        robust_by: dict[tuple[str, str], list[tuple[str, Tensor]]] = {}
        for spec in attacks:
            new = _run_attack(model, x, y, logits, correct, spec, seed, batch_size, device, gallery_dir, gallery_size,
                              done, dist, precision)
            for (label, _), rec in zip(spec.eps, new):  # each cell is written as soon as it is done
                emit(rec)
                mask = unpack_mask(rec["robust_bits"], len(y))
                robust_by.setdefault((spec.norm.value, label), []).append((spec.label, mask))
        for (norm, label), pairs in robust_by.items():
            eps = next(e for s in attacks for lab, e in s.eps if lab == label and s.norm.value == norm)
            robust = torch.stack([m for _, m in pairs]).all(dim=0)
            emit({"kind": "worst_case", "cell": f"worst|{norm}|{label}", "norm": norm, "eps": eps, "eps_label": label,
                  "attacks": [a for a, _ in pairs], "n": len(y), "n_robust": int(robust.sum()),
                  "robust_accuracy": int(robust.sum()) / len(y), "robust_bits": pack_mask(robust)})
    return records


def _run_attack(model: nn.Module, x: Tensor, y: Tensor, clean_logits: Tensor, correct: Tensor, spec: AttackSpec,
                seed: int, batch_size: int, device: torch.device, gallery_dir: Path | None,
                gallery_size: int, finished: dict[str, Record], dist: Dist, precision: str) -> Iterator[Record]:
    """Yield one attack's records in eps order: a finished cell's stored record (from `finished`, the records
    by cell key), else a new one. A budget
    attack runs once per eps that is not finished (its record yielded at once, so a kill loses at most
    the cell in progress); a minimal attack runs once for all its eps, unless all are finished."""
    fn = ATTACKS.get(spec.name)
    # a defended model with a non-differentiable part gives attacks its BPDA version (same forward values);
    # success is always judged on the real model
    attacked = attack_view(model)
    rows = correct.nonzero().flatten()
    minimal = spec.kind == "minimal"
    targets = y
    if spec.targeted:
        targets = choose_targets(clean_logits, y, spec.target, seed, torch.arange(len(y)))

    kwargs = spec.call_kwargs()
    for key in spec.model_params:  # the runner, not the attack, puts models on the device (frozen as the target)
        value = kwargs.get(key)
        if isinstance(value, nn.Module):
            kwargs[key] = value.to(device).eval()
        elif isinstance(value, list):
            kwargs[key] = [m.to(device).eval() for m in value]

    def run(eps: float) -> tuple[Tensor, Counter, float]:
        threat = ThreatModel(spec.norm, eps)
        counter = Counter()
        counted = CountingModel(attacked, counter)
        if spec.batch_dependent:  # one call over every sample (rank 0's), so nothing depends on batch_size
            batches = [rows] if dist.main and len(rows) else []
        else:
            batches = dist.batches(rows, batch_size)  # under torchrun this process's share of the batches
        outs = []
        tick = time.perf_counter()
        for idx in batches:
            with autocast(device, precision):
                out = fn(counted, x[idx].to(device), targets[idx].to(device), threat=threat,
                         generator=SampleGenerators(seed, idx), **kwargs)
            outs.append(out.detach().cpu().to(x.dtype))
        mine = torch.cat(batches) if batches else rows[:0]
        x_mine = torch.cat(outs) if outs else x[:0]
        seconds = dist.total(time.perf_counter() - tick, "max")
        counter.forward, counter.backward = int(dist.total(counter.forward)), int(dist.total(counter.backward))
        return dist.combine(x, mine, x_mine), counter, seconds

    cells = [f"{spec.label}|{spec.norm.value}|{label}" for label, _ in spec.eps]
    once = run(float("inf")) if minimal and not all(c in finished for c in cells) else None
    for i, ((label, eps), cell) in enumerate(zip(spec.eps, cells)):
        if cell in finished:
            yield finished[cell]
            continue
        x_adv, counter, seconds = once if once is not None else run(eps)
        record = _cell_record(model, x, y, targets, x_adv, correct, spec, label, eps, counter, seconds, batch_size,
                              device, gallery_dir, gallery_size, i)
        yield record if precision == "fp32" else {**record, "precision": precision}


def _cell_record(model: nn.Module, x: Tensor, y: Tensor, targets: Tensor, x_adv: Tensor, correct: Tensor,
                 spec: AttackSpec, label: str, eps: float, counter: Counter, seconds: float, batch_size: int,
                 device: torch.device, gallery_dir: Path | None, gallery_size: int, index: int) -> Record:
    adv_logits = predict(model, x_adv, batch_size, device)
    pred, conf = confidence(adv_logits)
    norms = perturbation_norms(x_adv, x)
    dist = norms[spec.norm.value]
    within = dist <= eps * (1 + 1e-5) + 1e-6
    fooled = (pred == targets) if spec.targeted else (pred != y)
    success = correct & fooled & within
    robust = correct & ~success
    if spec.kind != "minimal" and bool((correct & ~within).any()):
        raise InputError(f"attack {spec.label} left the eps={label} {spec.norm.value} ball on "
                         f"{int((correct & ~within).sum())} samples (max norm {float(dist[correct].max()):.6g})")
    n_attacked = int(correct.sum())
    k = int(adv_logits.shape[1])
    # what the model predicts on the attacked samples, with a perturbation within eps (else the clean input)
    landed = torch.where(within, pred, y)[correct]
    record: Record = {
        "kind": "attack", "cell": f"{spec.label}|{spec.norm.value}|{label}", "attack": spec.label,
        "attack_name": spec.name, "attack_kind": spec.kind, "norm": spec.norm.value, "eps": eps, "eps_label": label,
        "targeted": spec.targeted, "params": _jsonable(spec.resolved_params()), "n": len(y), "n_attacked": n_attacked,
        "n_robust": int(robust.sum()), "robust_accuracy": int(robust.sum()) / len(y),
        "attack_success_rate": rate(int(success.sum()), n_attacked),
        "mean_confidence": float(conf[success].mean()) if bool(success.any()) else None,
        "norms": {k: summarize(v[success]) for k, v in norms.items()},
        "time_s": seconds, "forward": counter.forward, "backward": counter.backward,
        "queries": counter.forward if spec.kind == "blackbox" else None,
        "robust_bits": pack_mask(robust), "confusion": confusion(y[correct], landed, k),
    }
    if gallery_dir is not None and n_attacked and gallery_size > 0:
        record["gallery"] = _save_gallery(gallery_dir, spec, index, x, x_adv, y, correct, pred, conf, model,
                                          batch_size, device, gallery_size)
    return record


def _save_gallery(gallery_dir: Path, spec: AttackSpec, index: int, x: Tensor, x_adv: Tensor, y: Tensor,
                  correct: Tensor, pred: Tensor, conf: Tensor, model: nn.Module, batch_size: int,
                  device: torch.device, size: int) -> str:
    rows = correct.nonzero().flatten()[:size]
    clean_pred, clean_conf = confidence(predict(model, x[rows], batch_size, device))
    name = f"{spec.label}-{spec.norm.value}__eps{index}.pt"
    buffer = io.BytesIO()
    torch.save({"x": x[rows].float(), "x_adv": x_adv[rows].float(), "y": y[rows], "pred_clean": clean_pred,
                "pred_adv": pred[rows], "conf_clean": clean_conf, "conf_adv": conf[rows], "index": rows}, buffer)
    write_atomic(inside(gallery_dir, gallery_dir / name), buffer.getvalue())
    return f"{gallery_dir.name}/{name}"


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v)) for k, v in params.items()}
