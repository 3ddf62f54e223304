"""The version of sparring (pyproject.toml reads it from here)."""

__version__ = "0.1.0"
