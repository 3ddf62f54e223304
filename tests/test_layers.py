"""The import graph: layers point downward, no cycles, no private names across modules, function-local imports
only for the optional dependencies (tools/imports.py); the attacks import nothing above them; the public API."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import sparring

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("imports_tool", ROOT / "tools" / "imports.py")
assert _spec is not None and _spec.loader is not None
imports_tool = importlib.util.module_from_spec(_spec)
sys.modules["imports_tool"] = imports_tool
_spec.loader.exec_module(imports_tool)


@pytest.mark.slow
def test_the_import_graph_keeps_the_rules():
    assert imports_tool.check() == []
    assert imports_tool.counts() == {"private names across modules": 0, "function-local sparring imports": 0,
                                     "function-local external imports": imports_tool.counts()[
                                         "function-local external imports"], "import cycles": 0}


def test_the_checker_finds_what_it_checks(tmp_path, monkeypatch):
    """A private name, a function-local sparring import, an upward import and a cycle, planted in a copy."""
    pkg = tmp_path / "src" / "sparring"
    (pkg / "attacks").mkdir(parents=True)
    (pkg / "defenses").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("")
    (pkg / "util.py").write_text("from .errors import _hidden\n")
    (pkg / "attacks" / "__init__.py").write_text("from ..defenses import spec\n")
    (pkg / "defenses" / "__init__.py").write_text("from .. import attacks\n\ndef f():\n    from ..util import x\n")
    monkeypatch.setattr(imports_tool, "ROOT", tmp_path / "src")
    problems = "\n".join(imports_tool.check())
    assert "private name _hidden imported from sparring.errors" in problems
    assert "function-local import of sparring.util" in problems
    assert "sparring.attacks (layer 4) imports sparring.defenses from a higher layer (3)" in problems
    assert "import cycle: sparring.attacks -> sparring.defenses" in problems


@pytest.mark.slow
def test_importing_the_attacks_loads_nothing_above_them():
    code = ("import sys, sparring.attacks; print(sorted({m.split('.')[1] for m in sys.modules "
            "if m.startswith('sparring.') and m.count('.') >= 1}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(eval(out))  # a printed list of names
    assert loaded.isdisjoint({"defenses", "evaluate", "experiment", "cli", "report"}), loaded
    assert "attacks" in loaded


def test_importing_sparring_is_cheap_and_the_public_api_resolves():
    out = subprocess.run([sys.executable, "-c", "import sys, sparring; print(len([m for m in sys.modules "
                          "if m.startswith('sparring')]))"], capture_output=True, text=True, check=True).stdout
    assert int(out) <= 2  # sparring and sparring.version: the rest loads on first use
    public = sorted(sparring._PUBLIC) + sorted(sparring._RENAMED)
    assert sorted(sparring.__all__) == sorted(["__version__", *public])
    for name in sparring.__all__:
        assert getattr(sparring, name) is not None, name
    assert sparring.load_model is sparring.defenses.load_defended
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        sparring.nope  # noqa: B018


def test_the_package_is_typed():
    assert (ROOT / "src" / "sparring" / "py.typed").is_file()
