"""TOML experiment configs -> frozen dataclasses. Unknown keys are rejected; "8/255" is exact.

A config names a dataset, a model (load weights or train), the training recipe, and the
attacks with their epsilons. `Config()` is the built-in default: a CNN on scikit-learn's
digits, trained in seconds, attacked with FGSM, PGD and the iterative L2 attack.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .paths import check_name


def parse_eps(value: object) -> tuple[str, float]:
    """Parse an epsilon: a number, "0.3", "8/255" or "inf"; returns (label, value)."""
    text = str(value).strip()
    try:
        number = float(text) if text.lower() in ("inf", "infinity") else float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"expected an epsilon like 0.3 or 8/255, got {value!r}") from None
    if math.isnan(number) or number < 0:
        raise ConfigError(f"eps must be >= 0, got {value!r}")
    return text, number


@dataclass(frozen=True)
class DataConfig:
    name: str = "digits"
    n: int = 0  # test samples to evaluate (0 = all)
    data_dir: str = ""
    train_n: int = 0  # training images to train on, the first ones (0 = all; fewer for reduced CPU runs)


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "digits-cnn"
    weights: str = ""  # path or pretrained alias; empty = train


@dataclass(frozen=True)
class TrainSettings:
    """The knobs of one training run, the `[train]` table of a config; every training function of sparring
    (plain training, each defense's recipe) takes one of these, and the CLI builds one from its flags.

    optimizer / schedule / augment name entries of sparring.training's OPTIMIZERS / SCHEDULES /
    AUGMENTATIONS (checked when training starts); pad is the random crop's padding; precision, channels_last
    and compile are the speed opt-ins of sparring.precision ("bf16" / "fp16" autocast, fp16 with a
    gradient scaler). Seed and device are not knobs of the recipe: train() takes them beside.
        >>> settings = TrainSettings(epochs=5, optimizer="sgd", lr=0.1, weight_decay=5e-4)
    """

    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 0.002
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    augment: str = "none"
    pad: int = 4
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False

    def replace(self, **changes: Any) -> TrainSettings:
        """A copy with some fields changed (dataclasses.replace)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ModelEntry(ModelConfig):
    """One [[models]] entry of a matrix: a model and the label its rows carry (default: arch)."""

    label: str = ""


@dataclass(frozen=True)
class AttackConfig:
    name: str
    norm: str = "linf"
    eps: tuple[str, ...] = ()  # empty = the evaluation's eps list
    label: str = ""
    targeted: bool = False
    target: str = "random"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DefenseConfig:
    """One [[defenses]] entry: a name of `sparring list defenses` and its parameters; eps and norm
    are the budget of an adversarial-training recipe (ignored by the others)."""

    name: str
    eps: str = ""
    norm: str = "linf"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class VariantConfig:
    """One [[variants]] entry: a named defense chain (empty = no defense) applied to every model of the
    matrix; epochs > 0 overrides [train] epochs for it (e.g. fewer for costly adversarial training)."""

    name: str
    defenses: tuple[DefenseConfig, ...] = ()
    epochs: int = 0


@dataclass(frozen=True)
class EvalConfig:
    eps: tuple[str, ...] = ("0.05", "0.1", "0.2", "0.3")
    batch_size: int = 256
    gallery: int = 8
    over: str = "all"  # the report's robust accuracy: over "all" n samples, or over the "correct" ones
    precision: str = "fp32"  # attacks under autocast ("bf16" / "fp16"): opt-in, noted by the audit


def _default_attacks() -> tuple[AttackConfig, ...]:
    return (
        AttackConfig("fgsm"),
        AttackConfig("pgd", params={"steps": 20, "restarts": 1}),
        AttackConfig("iterative-l2", norm="l2", eps=("0.5", "1", "2"), targeted=True,
                     params={"steps": 300, "step_size": 0.05}),
    )


@dataclass(frozen=True)
class AuditConfig:
    enabled: bool = True  # the gradient-masking audit after the attacks (report section "Audit")
    n: int = 100  # first n evaluated images (0 = all of them)
    norm: str = "linf"
    eps: tuple[str, ...] = ()  # empty = the evaluation's eps list
    steps: int = 20
    restarts: int = 1  # of the naive PGD (convergence compares twice the steps and twice the restarts)
    square_queries: int = 300


@dataclass(frozen=True)
class Config:
    name: str = "digits"
    seed: int = 0
    device: str = "cpu"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainSettings = field(default_factory=TrainSettings)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    attacks: tuple[AttackConfig, ...] = field(default_factory=_default_attacks)
    defenses: tuple[DefenseConfig, ...] = ()
    audit: AuditConfig = field(default_factory=AuditConfig)
    models: tuple[ModelEntry, ...] = ()  # a matrix: these models instead of [model]
    variants: tuple[VariantConfig, ...] = ()  # a matrix: these defense chains instead of [[defenses]]


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainSettings, "evaluate": EvalConfig,
             "audit": AuditConfig}


def _build(cls: type, table: dict[str, Any], where: str) -> Any:
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(names))
    if unknown:
        raise ConfigError(f"unknown key {where}{unknown[0]!r}: expected one of {', '.join(names)}")
    values = {}
    for key, raw in table.items():
        default = names[key].default
        if isinstance(default, tuple) or (key == "eps" and cls is not DefenseConfig):
            raw = tuple(str(v) for v in (raw if isinstance(raw, list) else [raw]))
            if key == "eps":
                for v in raw:
                    parse_eps(v)
        elif isinstance(default, bool) and not isinstance(raw, bool):
            raise ConfigError(f"{where}{key} must be true or false, got {raw!r}")
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            if isinstance(raw, bool) or not isinstance(raw, (int, float)):
                raise ConfigError(f"{where}{key} must be a number, got {raw!r}")
            raw = type(default)(raw) if isinstance(default, float) or float(raw).is_integer() else raw
        elif isinstance(default, str) and not isinstance(raw, str):
            raise ConfigError(f"{where}{key} must be a string, got {raw!r}")
        values[key] = raw
    return cls(**values)


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Validate a parsed TOML document into a Config."""
    top = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(raw) - top)
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r}: expected one of {', '.join(sorted(top))}")
    values: dict[str, Any] = {k: raw[k] for k in ("name", "seed", "device") if k in raw}
    for key, cls in _SECTIONS.items():
        if key in raw:
            values[key] = _build(cls, raw[key], f"{key}.")
    if "attacks" in raw:
        attacks = []
        for i, table in enumerate(raw["attacks"]):
            if "name" not in table:
                raise ConfigError(f"attacks[{i}] needs a name")
            own = {f.name for f in dataclasses.fields(AttackConfig)} - {"params"}
            fixed = {k: v for k, v in table.items() if k in own}
            extra = {k: v for k, v in table.items() if k not in fixed and k != "params"}
            fixed["params"] = {**table.get("params", {}), **extra}
            attacks.append(_build(AttackConfig, fixed, f"attacks[{i}]."))
        values["attacks"] = tuple(attacks)
    if "defenses" in raw:
        values["defenses"] = tuple(_table(DefenseConfig, table, f"defenses[{i}].")
                                   for i, table in enumerate(raw["defenses"]))
    if "models" in raw:
        values["models"] = tuple(_build(ModelEntry, _need(table, "arch", f"models[{i}]"), f"models[{i}].")
                                 for i, table in enumerate(raw["models"]))
    if "variants" in raw:
        values["variants"] = tuple(_variant(table, f"variants[{i}]") for i, table in enumerate(raw["variants"]))
    config = Config(**values)
    _check_matrix(config)
    return config


def _need(table: Any, key: str, where: str) -> dict[str, Any]:
    if not isinstance(table, dict) or key not in table:
        raise ConfigError(f"{where} needs a {key}")
    return table


def _variant(table: Any, where: str) -> VariantConfig:
    table = dict(_need(table, "name", where))
    chain = table.pop("defenses", [])
    if not isinstance(chain, list):
        raise ConfigError(f"{where}.defenses must be a list of tables like {{name = \"pgd-at\", eps = \"0.1\"}}, "
                          f"got {chain!r}")
    variant = _build(VariantConfig, table, f"{where}.")
    return dataclasses.replace(variant, defenses=tuple(_table(DefenseConfig, d, f"{where}.defenses[{j}].")
                                                      for j, d in enumerate(chain)))


def _check_matrix(config: Config) -> None:
    check_name(config.name, "name (the run folder's default name, runs/<name>)")
    if config.variants and config.defenses:
        raise ConfigError("expected either [[defenses]] (one defense chain) or [[variants]] (several), got both")
    for where, value in (("train.precision", config.train.precision),
                         ("evaluate.precision", config.evaluate.precision)):
        if value not in ("fp32", "bf16", "fp16"):
            raise ConfigError(f"{where} must be \"fp32\", \"bf16\" or \"fp16\", got {value!r}")
    if config.evaluate.gallery < 0:
        raise ConfigError(f"evaluate.gallery must be >= 0 (images per cell; 0 = none), got {config.evaluate.gallery}")
    if config.evaluate.over not in ("all", "correct"):
        raise ConfigError(f"evaluate.over must be \"all\" or \"correct\", got {config.evaluate.over!r}")
    for what, labels in (("variants", [v.name for v in config.variants]),
                         ("models", [m.label or m.arch for m in config.models])):
        bad = sorted({x for x in labels if labels.count(x) > 1 or not x.strip() or "|" in x})
        if bad:
            raise ConfigError(f"expected distinct {what} names without '|', got {bad[0]!r} "
                              f"{'twice' if labels.count(bad[0]) > 1 else ''}".rstrip())


def _table(cls: type, table: dict[str, Any], where: str) -> Any:
    """An array-of-tables entry: the dataclass's own keys, every other key into params."""
    if not isinstance(table, dict) or "name" not in table:
        raise ConfigError(f"{where[:-1]} needs a name")
    own = {f.name for f in dataclasses.fields(cls)} - {"params"}
    fixed = {k: v for k, v in table.items() if k in own}
    if fixed.get("eps", "") != "":
        fixed["eps"] = str(fixed["eps"])
        parse_eps(fixed["eps"])
    fixed["params"] = {**table.get("params", {}), **{k: v for k, v in table.items() if k not in own and k != "params"}}
    return _build(cls, fixed, where)


def load_config(path: str | Path | None) -> Config:
    """Read a TOML config (None = the built-in default)."""
    if path is None:
        return Config()
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p} is not valid TOML: {exc}") from None
    return config_from_dict(raw)


def config_to_dict(config: Config) -> dict[str, Any]:
    """Plain dict of a Config (tuples become lists)."""
    return dataclasses.asdict(config)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def dump_toml(config: Config) -> str:
    """The resolved config as TOML text (round-trips through load_config)."""
    data = config_to_dict(config)
    lines = [f"{k} = {_toml_value(data[k])}" for k in ("name", "seed", "device")]
    for section in _SECTIONS:
        lines += ["", f"[{section}]"] + [f"{k} = {_toml_value(v)}" for k, v in data[section].items()]
    for key in ("attacks", "defenses", "models", "variants"):  # empty matrices write nothing: old runs resume
        for entry in data[key]:
            lines += ["", f"[[{key}]]"] + [f"{k} = {_toml_value(v)}" for k, v in entry.items()]
    return "\n".join(lines) + "\n"
