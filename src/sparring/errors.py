"""Typed errors. The CLI turns every SparringError into one line and exit code 2."""

from __future__ import annotations


class SparringError(Exception):
    """Base class of every error sparring raises on purpose."""


class ConfigError(SparringError):
    """A configuration file or option is malformed."""


class InputError(SparringError):
    """A tensor, label or hyperparameter given by the user is invalid."""


class UnknownNameError(SparringError):
    """A name (dataset, model, attack, ...) is not registered."""


class DataError(SparringError):
    """A dataset or checkpoint is missing, truncated or corrupt."""
