"""A defense chain from a config or the CLI, checked against the DefenseSpecs, and trained: the parts its
defenses fit on the data alone, then the model by the chain's recipe (or plainly)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from ..config import TrainSettings, parse_eps
from ..data import require_train
from ..defenses import DEFENSES, Context, DefenseSpec, Trained, check_defense
from ..errors import ConfigError
from ..models import MODELS
from ..threat import Norm, ThreatModel
from ..training import train
from .resolve import check_fits, resolve_model

__all__ = ["Chain", "defense_chain", "fit_parts", "recipe_settings", "train_model"]

log = logging.getLogger(__name__.rpartition(".")[0])


@dataclass(frozen=True)
class Chain:
    """A checked defense chain: its entries as a saved model records them ({"name", "params"} with the
    defaults filled in, plus "eps" and "norm" for an adversarial-training recipe), which entry trains the
    model (None: plain training) and that recipe's threat."""

    entries: tuple[dict[str, Any], ...] = ()
    trains: int | None = None
    threat: ThreatModel | None = None

    @property
    def recipe(self) -> dict[str, Any] | None:
        """The entry whose spec trains the model, or None."""
        return None if self.trains is None else self.entries[self.trains]

    @property
    def specs(self) -> list[DefenseSpec]:
        return [DEFENSES.get(e["name"]) for e in self.entries]

    @property
    def data_parallel(self) -> bool:
        """Whether the unit trains in DistributedDataParallel under torchrun: plain training and the recipes
        that say so (adversarial training), and no defense that fits parts of its own (rank 0 does those)."""
        recipe = None if self.recipe is None else DEFENSES.get(self.recipe["name"])
        return (recipe is None or recipe.data_parallel) and not any(s.fit for s in self.specs)

    @property
    def fits(self) -> bool:
        """Whether a defense of the chain trains parts of its own on the data (an autoencoder)."""
        return any(s.fit for s in self.specs)

    def copy(self, before: Sequence[dict[str, Any]] = ()) -> Chain:
        """The chain with entries of its own (``fit_parts`` adds facts to them), ``before`` put first (the
        defenses a saved model already had)."""
        entries = tuple(dict(e) for e in (*before, *self.entries))
        return Chain(entries, None if self.trains is None else self.trains + len(before), self.threat)


def defense_chain(entries: Sequence[tuple[str, dict[str, Any], str, str]]) -> Chain:
    """Check (name, params, eps, norm) entries against their specs into a Chain.

    At most one entry may train the model; a recipe that needs eps (adversarial training) gets it as its
    threat (ConfigError when missing); a defense with trained parts of its own appears at most once.
    """
    checked: list[dict[str, Any]] = []
    trains, threat = None, None
    for name, params, eps, norm in entries:
        spec, values = check_defense(name, params)
        entry: dict[str, Any] = {"name": name, "params": values}
        if (spec.fit or spec.around) and any(e["name"] == name for e in checked):
            raise ConfigError(f"expected at most one {name} defense, got two")
        if spec.train is not None:
            if trains is not None:
                raise ConfigError(f"expected at most one training defense, got {checked[trains]['name']}, {name}")
            if spec.needs_eps:
                if not eps:
                    raise ConfigError(f"defense {name!r} needs eps, the training budget (--eps, or eps in a "
                                      "config's [[defenses]] entry; e.g. 0.1 or 8/255)")
                threat = ThreatModel(Norm.parse(norm), parse_eps(eps)[1])
                entry.update(eps=eps, norm=threat.norm.value)
            trains = len(checked)
        checked.append(entry)
    return Chain(tuple(checked), trains, threat)


def fit_parts(chain: Chain, context: Context, parts: dict[str, Tensor]) -> dict[str, Any]:
    """Fit the parts the chain's defenses train on the data alone (the MagNet autoencoder) and ``parts``
    lacks (a defense's parts are keyed "<name>.*"); adds them to ``parts`` and the facts to the entry.
    Returns {name: history}."""
    histories: dict[str, Any] = {}
    for entry, spec in zip(chain.entries, chain.specs):
        if spec.fit is None or any(k.startswith(f"{spec.name}.") for k in parts):
            continue
        require_train(context.dataset)
        fitted = spec.fit(context, dict(entry["params"]))
        parts.update(fitted.parts)
        entry.update(fitted.entry)
        histories[spec.name] = fitted.history
    return histories


def _surrogates(text: str, context: Context) -> list[nn.Module]:
    """ensemble-at's surrogates: trained models by name or path; a bare architecture is first trained plainly
    on the dataset (seeds +1, +2, ...: Tramer's static models), and retrained identically on resume."""
    ds, out = context.dataset, []
    for i, ref in enumerate(r for r in text.split("+") if r):
        seed = context.seed + 1 + i
        net, _ = resolve_model(ref, dataset=ds, seed=seed)
        if ref in MODELS:
            log.info(f"training the static surrogate {ref} (seed +{1 + i}) for ensemble adversarial training")
            x_train, y_train = require_train(ds)
            train(net, x_train, y_train, context.settings, seed=seed, device=context.device, x_val=ds.x_test,
                  y_val=ds.y_test, progress=context.progress)
        check_fits(net, ds.input_shape, ds.num_classes, f"{ds.name} (surrogate {ref})")
        out.append(net.eval())
    return out


def train_model(model: nn.Module, chain: Chain, context: Context) -> Trained:
    """Train on the context's dataset: plainly (no recipe in the chain) or by the recipe's spec, its "models"
    parameters (ensemble-at's surrogates) resolved first. Returns what to deploy and the history."""
    ds = context.dataset
    if chain.recipe is None:
        x_train, y_train = require_train(ds)
        return Trained(model, train(model, x_train, y_train, context.settings, seed=context.seed,
                                    device=context.device, x_val=ds.x_test, y_val=ds.y_test,
                                    checkpoint=context.checkpoint, resume=context.resume, progress=context.progress))
    spec = DEFENSES.get(chain.recipe["name"])
    assert spec.train is not None
    params = dict(chain.recipe["params"])
    for p in spec.params:
        if p.kind == "models" and isinstance(params.get(p.name), str):
            params[p.name] = _surrogates(params[p.name], context)
    require_train(ds)
    return spec.train(model, Context(ds, context.settings, context.seed, context.device, chain.threat,
                                     context.checkpoint, context.resume, context.progress), params)


def recipe_settings(settings: TrainSettings, chain: Chain, schedule: str | None) -> TrainSettings:
    """``settings`` with the schedule given, else the recipe's own (fgsm-rs: onecycle), else cosine."""
    if schedule is not None:
        return settings.replace(schedule=schedule)
    spec = None if chain.recipe is None else DEFENSES.get(chain.recipe["name"])
    return settings.replace(schedule=(spec.meta.get("schedule") if spec is not None else None) or "cosine")

