"""The units of a run: each model x defense variant of a config, and its deployed model (trained, or loaded
from an earlier run of the same folder, or from its weights)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..config import Config, ModelConfig, VariantConfig
from ..data import Dataset
from ..defenses import Context, apply_defenses, load_defended, network_and_parts
from ..distributed import current
from ..errors import ConfigError
from ..models import save_model
from ..paths import safe_name
from ..training import discard, state_path
from .chain import Chain, defense_chain, fit_parts, train_model
from .resolve import resolve_model

__all__ = ["Unit", "finished", "matrix", "unit_model"]

log = logging.getLogger(__name__.rpartition(".")[0])


@dataclass(frozen=True)
class Unit:
    """One model x defense variant of a run.

    prefix: the start of its cell keys ("model|variant|"; "" when the run has one unit); suffix: its file
    names' piece ("model__variant"; "" for one unit); trained: where its model is saved.
    """

    model: ModelConfig
    label: str
    variant: VariantConfig
    chain: Chain
    prefix: str
    suffix: str
    trained: Path

    @property
    def where(self) -> str:
        """" (model / variant)" for the log lines of a matrix unit; "" for a single unit."""
        return f" ({self.label} / {self.variant.name})" if self.prefix else ""

    @property
    def gallery(self) -> str:
        return "adversarial" + (f"__{self.suffix}" if self.suffix else "")

    @property
    def latent(self) -> str:
        return "latent" + (f"__{self.suffix}" if self.suffix else "") + ".pt"

    def needs_training(self) -> bool:
        """Whether the unit trains something (its model, or defense parts) unless finished earlier."""
        return (not self.model.weights or self.chain.fits) and not finished(self.trained)


def matrix(config: Config, out: Path = Path(".")) -> list[Unit]:
    """The units of a config: [[models]] (else [model]) x [[variants]] (else the one [[defenses]] chain). A
    single unit keeps the plain cell keys ("clean", "pgd|linf|0.1") and files (model.safetensors); in a matrix
    each key starts with "model|variant|" and each model is models/<model>__<variant>.safetensors."""
    models: list[ModelConfig] = list(config.models) or [config.model]
    variants = list(config.variants) or [VariantConfig("+".join(d.name for d in config.defenses) or "none",
                                                        config.defenses)]
    single = len(models) * len(variants) == 1
    units = []
    for m in models:
        label = getattr(m, "label", "") or m.arch
        for v in variants:
            chain = defense_chain([(d.name, dict(d.params), d.eps, d.norm) for d in v.defenses])
            suffix = "" if single else f"{safe_name(label)}__{safe_name(v.name)}"
            trained = out / (f"models/{suffix}.safetensors" if suffix else "model.safetensors")
            units.append(Unit(m, label, v, chain, "" if single else f"{label}|{v.name}|", suffix, trained))
    return units


def finished(trained: Path) -> bool:
    """A unit's model file without a training state beside it is final (while training, every per-epoch
    weights file has a newer state beside it, removed once the final model is saved)."""
    return trained.exists() and not state_path(trained).exists()


def unit_model(unit: Unit, config: Config, ds: Dataset, device: str,
               progress: bool) -> tuple[nn.Module, dict[str, Any]]:
    """The deployed model of one unit: loaded when trained earlier in this run, else loaded from its weights
    (training the defense parts it needs) or trained here, and saved to ``unit.trained``.

    Training keeps its state in ``<trained stem>.train-state.pt`` after every epoch and resumes from it (on
    every rank of a DistributedDataParallel unit); the file is removed once the final model is saved, so
    the model file without it is a finished model."""
    trained, chain = unit.trained, unit.chain.copy()
    meta = {"dataset": ds.name, "classes": list(ds.classes)}
    if finished(trained):  # trained (or given its trained defense parts) earlier in this run
        model, saved = load_defended(trained)  # the saved meta rebuilds the deployed defenses
        log.info(f"loaded the model trained earlier in this run: {trained}")
        return model, {"arch": unit.model.arch, "weights": str(trained), "trained_here": True,
                       "history": saved.get("history")}
    trained.parent.mkdir(parents=True, exist_ok=True)
    settings = config.train if not unit.variant.epochs else config.train.replace(epochs=unit.variant.epochs)
    context = Context(ds, settings, config.seed, device, chain.threat, trained, True, progress)
    if unit.model.weights:
        if chain.recipe is not None:
            raise ConfigError(f"defense {chain.recipe['name']!r} trains the model: leave model.weights empty, got "
                              f"{unit.model.weights!r}")
        model, info = resolve_model(unit.model.arch, unit.model.weights, dataset=ds)
        if chain.entries:
            net, parts = network_and_parts(model)
            chain = chain.copy(before=info.get("meta", {}).get("defense", []))
            histories = fit_parts(chain, context, parts)
            model = apply_defenses(net, chain.entries, parts)
            if histories and current().main:
                save_model(net, trained, meta={**meta, "history": histories, "defense": list(chain.entries)},
                           parts=parts)
        return model, info
    model, info = resolve_model(unit.model.arch, dataset=ds, seed=config.seed)
    fitted: dict[str, Any] = {}
    histories = fit_parts(chain, context, fitted)
    model = apply_defenses(model, chain.entries, fitted)
    how = f" with {chain.recipe['name']}" if chain.recipe else ""
    images = 0 if ds.y_train is None else len(ds.y_train)
    log.info(f"training {unit.model.arch}{how} on {ds.name} ({images} images, {settings.epochs} epochs)")
    tick = time.perf_counter()
    result = train_model(model, chain, context)
    info.update(trained_here=True, train_time_s=time.perf_counter() - tick, history=result.history)
    net, parts = network_and_parts(result.model)
    if current().main:  # under torchrun every rank trained its share; rank 0 saves
        history = {**histories, "model": result.history} if histories else result.history
        save_model(net, trained, meta={**meta, "history": history, "defense": list(chain.entries)}, parts=parts)
        discard(trained, weights=False)  # the state file (and a teacher's checkpoint): `trained` is final now
    return result.model, info
