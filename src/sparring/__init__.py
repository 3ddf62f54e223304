"""sparring: attack, defend and audit image classifiers against adversarial examples.

    import sparring
    model = sparring.build_model("digits-cnn")
    ds = sparring.load_dataset("digits")
    sparring.train(model, ds.x_train, ds.y_train, sparring.TrainSettings(epochs=5))
    x_adv = sparring.pgd(model, ds.x_test, ds.y_test, threat=sparring.ThreatModel(sparring.Norm.LINF, 0.1))

The names below load on first use (PEP 562), so ``import sparring.attacks`` imports no layer above the
attacks, and ``import sparring`` costs almost nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import __version__

#: public name -> the module that defines it
_PUBLIC = {
    # core
    "Norm": "sparring.threat", "ThreatModel": "sparring.threat", "SampleGenerators": "sparring.rng",
    "derive": "sparring.rng", "SparringError": "sparring.errors", "ConfigError": "sparring.errors",
    "InputError": "sparring.errors", "UnknownNameError": "sparring.errors", "DataError": "sparring.errors",
    "Config": "sparring.config", "TrainSettings": "sparring.config", "load_config": "sparring.config",
    "LabelOracle": "sparring.oracle",
    # models, data, training
    "MODELS": "sparring.models", "PRETRAINED": "sparring.models", "build_model": "sparring.models",
    "load_pretrained": "sparring.models", "save_model": "sparring.models", "DATASETS": "sparring.data",
    "load_dataset": "sparring.data", "load_inputs": "sparring.data", "train": "sparring.training",
    "evaluate_accuracy": "sparring.training", "Objective": "sparring.training",
    # attacks
    "ATTACKS": "sparring.attacks", "fgsm": "sparring.attacks", "pgd": "sparring.attacks", "apgd": "sparring.attacks",
    "strong": "sparring.attacks", "cw_l2": "sparring.attacks", "deepfool": "sparring.attacks",
    "square": "sparring.attacks", "eot_pgd": "sparring.attacks", "transfer": "sparring.attacks",
    # defenses
    "DEFENSES": "sparring.defenses", "DefenseSpec": "sparring.defenses", "Param": "sparring.defenses",
    "Defended": "sparring.defenses", "apply_defenses": "sparring.defenses", "adversarial_training": "sparring.defenses",
    # evaluation, report, experiments
    "AttackSpec": "sparring.evaluate", "evaluate": "sparring.evaluate", "audit": "sparring.evaluate.audit",
    "write_report": "sparring.report", "run_experiment": "sparring.experiment", "resolve_model": "sparring.experiment",
}
_RENAMED = {"load_model": ("sparring.defenses", "load_defended")}  # a saved model with its defenses put back on

#: the public API (tests/test_layers.py checks it names exactly _PUBLIC and _RENAMED)
__all__ = ["__version__", "ATTACKS", "AttackSpec", "Config", "ConfigError", "DATASETS", "DEFENSES", "DataError",
           "Defended", "DefenseSpec", "InputError", "LabelOracle", "MODELS", "Norm", "Objective", "PRETRAINED",
           "Param", "SampleGenerators", "SparringError", "ThreatModel", "TrainSettings", "UnknownNameError",
           "adversarial_training", "apgd", "apply_defenses", "audit", "build_model", "cw_l2", "deepfool", "derive",
           "eot_pgd", "evaluate", "evaluate_accuracy", "fgsm", "load_config", "load_dataset", "load_inputs",
           "load_model", "load_pretrained", "pgd", "resolve_model", "run_experiment", "save_model", "square",
           "strong", "train", "transfer", "write_report"]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
    elif name in _RENAMED:
        module, attr = _RENAMED[name]
        value = getattr(importlib.import_module(module), attr)
    else:
        raise AttributeError(f"module 'sparring' has no attribute {name!r}")
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what a type checker and an IDE see; never run
    from .attacks import ATTACKS, cw_l2, eot_pgd
    from .attacks.apgd import apgd
    from .attacks.deepfool import deepfool
    from .attacks.fgsm import fgsm
    from .attacks.pgd import pgd
    from .attacks.square import square
    from .attacks.strong import strong
    from .attacks.transfer import transfer
    from .config import Config, TrainSettings, load_config
    from .data import DATASETS, load_dataset, load_inputs
    from .defenses import DEFENSES, Defended, DefenseSpec, Param, apply_defenses
    from .defenses import load_defended as load_model
    from .defenses.adversarial_training import adversarial_training
    from .errors import ConfigError, DataError, InputError, SparringError, UnknownNameError
    from .evaluate import AttackSpec, evaluate
    from .evaluate.audit import audit
    from .experiment import resolve_model, run_experiment
    from .models import MODELS, PRETRAINED, build_model, load_pretrained, save_model
    from .oracle import LabelOracle
    from .report import write_report
    from .rng import SampleGenerators, derive
    from .threat import Norm, ThreatModel
    from .training import Objective, evaluate_accuracy, train
