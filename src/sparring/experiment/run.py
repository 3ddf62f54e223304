"""`sparring run`: train or load every unit of a config, evaluate the attack x eps matrix on each, audit each,
write the report; a killed run resumes in its folder."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from torch import nn

from ..config import Config
from ..data import Dataset, load_dataset
from ..distributed import solo
from ..errors import ConfigError
from ..evaluate import evaluate
from ..records import Record
from ..report import write_report
from ..store import RunStore, environment
from .records import audit_record, latent_record
from .resolve import attack_specs, check_fits, join_job
from .units import Unit, matrix, unit_model

__all__ = ["UnitStore", "run_experiment"]

log = logging.getLogger(__name__.rpartition(".")[0])


class UnitStore:
    """A RunStore seen by one matrix unit: cell keys carry the unit's prefix on disk, not in the runner."""

    def __init__(self, store: RunStore, prefix: str) -> None:
        self.store, self.prefix = store, prefix

    def done(self) -> dict[str, Record]:
        n = len(self.prefix)
        return {k[n:]: {**v, "cell": k[n:]} for k, v in self.store.done().items() if k.startswith(self.prefix)}

    def append(self, record: Record) -> None:
        self.store.append({**record, "cell": self.prefix + record["cell"]})


def _dataset(config: Config, units: list[Unit]) -> tuple[Dataset, int]:
    ds = load_dataset(config.data.name, data_dir=config.data.data_dir or None,
                      train=any(u.needs_training() for u in units))
    if config.data.train_n and ds.x_train is not None and ds.y_train is not None:
        if not 0 < config.data.train_n <= len(ds.y_train):
            raise ConfigError(f"data.train_n must be between 1 and {len(ds.y_train)} (0 = all), "
                              f"got {config.data.train_n}")
        ds = dataclasses.replace(ds, x_train=ds.x_train[:config.data.train_n], y_train=ds.y_train[:config.data.train_n])
    n = config.data.n or len(ds.y_test)
    if n < 0 or n > len(ds.y_test):
        raise ConfigError(f"data.n must be between 1 and {len(ds.y_test)} (0 = all), got {config.data.n}")
    return ds, n


def run_experiment(config: Config, out: Path, *, progress: bool = True) -> Path:
    """Train or load every model x defense variant, evaluate the attack x eps matrix on each, audit each,
    write the report; resumes in `out`. Progress goes to the "sparring" logger."""
    _, dist, device = join_job(config.device)  # under torchrun: rank 0 writes, every rank attacks a shard
    progress = progress and dist.main
    specs = attack_specs(config.attacks, config.evaluate.eps)  # a bad attack entry is refused before any file
    store = RunStore(out)
    if dist.main:
        store.open(config)
    dist.barrier()
    try:
        units = matrix(config, out)
        ds, n = _dataset(config, units)
        built: list[tuple[Unit, nn.Module, dict[str, Any]]] = []  # every model is trained (and saved) first
        for unit in units:
            if dist.active and not unit.chain.data_parallel:  # rank 0 trains alone, the others load its model
                if dist.main:
                    with solo():
                        model, info = unit_model(unit, config, ds, device, progress)
                dist.barrier()
                if not dist.main:
                    model, info = unit_model(unit, config, ds, device, progress)
            else:  # one process, or plain and adversarial training in DistributedDataParallel on every rank
                model, info = unit_model(unit, config, ds, device, progress)
            check_fits(model, ds.input_shape, ds.num_classes, ds.name)
            built.append((unit, model, info))
        # the report's latent-space plot (seeds/001, Fig. 8) when any variant is the contrastive defense
        contrastive = any(e["name"] == "contrastive" for u in units for e in u.chain.entries)
        latent_spec = next((s for s in specs if not s.targeted and s.kind != "minimal"), None)
        manifest: dict[str, Any] = {**environment(device), "seed": config.seed, "config": config.name,
                                    "dataset": {"name": ds.name, "sha256": ds.sha256, "source": ds.source, "n": n},
                                    "model": built[0][2], "classes": list(ds.classes)}
        if len(built) > 1:
            manifest["models"] = {unit.prefix.rstrip("|"): info for unit, _, info in built}
        if dist.active:
            manifest["processes"] = dist.world
        if dist.main:
            store.write_manifest(manifest)
        for unit, model, _ in built:
            context = {"model": unit.label, "dataset": ds.name, "defense": unit.variant.name}
            cells = UnitStore(store, unit.prefix)
            if dist.main:
                log.info(f"evaluating {len(specs)} attacks on {n} {ds.name} test images{unit.where}")
            evaluate(model, ds.x_test[:n], ds.y_test[:n], specs, seed=config.seed,
                     batch_size=config.evaluate.batch_size, device=device, context=context, done=cells.done(),
                     on_record=cells.append,
                     gallery_dir=out / unit.gallery, gallery_size=config.evaluate.gallery, dist=dist,
                     precision=config.evaluate.precision)
            if not dist.main:  # the audit and the latent plot run on rank 0 alone
                continue
            if config.audit.enabled and "audit" not in cells.done():
                log.info(f"auditing the evaluation for gradient masking{unit.where}")
                cells.append(audit_record(model, ds.x_test[:n], ds.y_test[:n], config, device, context))
            if contrastive and latent_spec is not None and "latent" not in cells.done():
                log.info(f"projecting the latent space{unit.where}")
                cells.append(latent_record(model, ds.x_test[:n], ds.y_test[:n], latent_spec, config.seed, device, out,
                                           unit.latent, context))
        if dist.main:
            write_report(out)
    finally:
        store.close()
    return out
