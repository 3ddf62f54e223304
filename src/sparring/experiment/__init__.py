"""Experiments: names resolved to devices, models and attack specs (resolve.py), defense chains checked and
trained (chain.py), the model x variant units of a config (units.py), the audit and latent records
(records.py), and `sparring run` (run.py)."""

from __future__ import annotations

from .chain import Chain, defense_chain, fit_parts, recipe_settings, train_model
from .records import LATENT_POINTS, audit_record, latent_record
from .resolve import attack_specs, check_fits, join_job, resolve_device, resolve_model, trained_model
from .run import UnitStore, run_experiment
from .units import Unit, finished, matrix, unit_model

__all__ = ["LATENT_POINTS", "Chain", "Unit", "UnitStore", "attack_specs", "audit_record", "check_fits",
           "defense_chain", "finished", "fit_parts", "join_job", "latent_record", "matrix", "recipe_settings",
           "resolve_device", "resolve_model", "run_experiment", "train_model", "trained_model", "unit_model"]
