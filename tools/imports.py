"""The import graph of src/sparring, checked: layers point downward, no cycles, no private names across
modules, function-local imports only for the optional dependencies.

    python tools/imports.py            # the checks; exit code 1 on a violation
    python tools/imports.py --graph    # the layers and the imports between them, as text

tests/test_layers.py runs the checks in the test suite; .ci/run also runs import-linter's layers contract
(pyproject.toml, [tool.importlinter]) over the same layers.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "sparring"

#: Top to bottom. A module may import its own layer's modules (unless the layer's packages are
#: independent) and any layer below; never a layer above.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("sparring.cli", "sparring.__main__"),
    ("sparring.experiment",),
    ("sparring.evaluate", "sparring.report"),
    ("sparring.defenses",),
    ("sparring.attacks",),
    ("sparring.training",),
    ("sparring.models", "sparring.data"),
    ("sparring.errors", "sparring.registry", "sparring.threat", "sparring.rng", "sparring.config",
     "sparring.store", "sparring.records", "sparring.distributed", "sparring.paths", "sparring.util",
     "sparring.precision", "sparring.oracle", "sparring.version", "sparring.image"),
)
#: Layers whose packages may not import each other (import-linter's "|").
INDEPENDENT = {2, 6}
#: The root package: its public API is loaded lazily (PEP 562), so it sits above every layer.
TOP = "sparring"
#: External packages a function may import inside its body: optional or heavy, needed by few calls.
OPTIONAL = ("scipy", "sklearn", "matplotlib", "torchvision", "timm", "importlinter", "torch._inductor")


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module (sparring.x.y) or external top-level name
    names: tuple[str, ...]  # names taken from the target (from X import a, b); empty for `import X`
    line: int
    local: bool  # inside a function body


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Visitor(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, known: dict[str, Path]) -> None:
        self.module, self.is_package, self.known = module, is_package, known
        self.depth, self.found = 0, []  # type: ignore[var-annotated]

    def _function(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        if _type_checking(node):  # annotations only: never executed
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def _base(self, level: int, module: str | None) -> str:
        if not level:
            return module or ""
        parts = self.module.split(".")
        if not self.is_package:
            parts = parts[:-1]
        parts = parts[: len(parts) - (level - 1)]
        return ".".join(parts + ([module] if module else []))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append(Import(self.module, alias.name, (), node.lineno, self.depth > 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = self._base(node.level, node.module)
        plain = []
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            if sub in self.known:  # `from . import submodule`
                self.found.append(Import(self.module, sub, (), node.lineno, self.depth > 0))
            else:
                plain.append(alias.name)
        if plain:
            self.found.append(Import(self.module, base, tuple(plain), node.lineno, self.depth > 0))


def imports() -> list[Import]:
    known = modules()
    out: list[Import] = []
    for name, path in known.items():
        visitor = _Visitor(name, path.name == "__init__.py", known)
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        out += visitor.found
    return out


def layer_of(module: str) -> int | None:
    for i, layer in enumerate(LAYERS):
        if any(module == top or module.startswith(top + ".") for top in layer):
            return i
    return None


def _owner(module: str) -> str:
    """The package or top-level module of a layer entry that holds `module`."""
    layer = layer_of(module)
    assert layer is not None
    return next(top for top in LAYERS[layer] if module == top or module.startswith(top + "."))


def _private_module(target: str) -> str | None:
    """The first private component (_name, not a dunder) of a sparring module path, else None."""
    parts = target.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[: i + 1])
    return None


def check() -> list[str]:
    known = modules()
    problems: list[str] = []
    internal = [i for i in imports() if i.target == PACKAGE or i.target.startswith(PACKAGE + ".")]
    for mod in known:
        if mod != TOP and layer_of(mod) is None:
            problems.append(f"{mod}: in no layer (add it to tools/imports.py LAYERS)")
    for imp in internal:
        where = f"{known[imp.source].relative_to(ROOT.parent)}:{imp.line}"
        if imp.local:
            problems.append(f"{where}: function-local import of {imp.target} (sparring modules import at the top)")
        for name in imp.names:
            if name.startswith("_") and not name.startswith("__") and imp.target != imp.source:
                problems.append(f"{where}: private name {name} imported from {imp.target}")
        private = _private_module(imp.target)
        if private is not None and not imp.source.startswith(private.rsplit(".", 1)[0] + ".") \
                and imp.source != private.rsplit(".", 1)[0]:
            problems.append(f"{where}: private module {private} imported from outside its package")
        if imp.source == TOP or imp.target == TOP:
            continue
        low, high = layer_of(imp.target), layer_of(imp.source)
        if low is None or high is None:
            continue
        if low < high:
            problems.append(f"{where}: {imp.source} (layer {high}) imports {imp.target} from a higher layer ({low})")
        elif low == high and high in INDEPENDENT and _owner(imp.source) != _owner(imp.target):
            problems.append(f"{where}: {imp.source} imports {imp.target}, an independent sibling")
    for imp in imports():
        external = not (imp.target == PACKAGE or imp.target.startswith(PACKAGE + "."))
        if imp.local and external and not any(imp.target == o or imp.target.startswith(o + ".") for o in OPTIONAL):
            problems.append(f"{known[imp.source].relative_to(ROOT.parent)}:{imp.line}: function-local import "
                            f"of {imp.target}, not an optional dependency ({', '.join(OPTIONAL)})")
    problems += [f"import cycle: {' -> '.join(c)}" for c in cycles(internal)]
    return problems


def cycles(internal: list[Import]) -> list[list[str]]:
    """Strongly connected components (more than one module) of the sparring import graph, function-local
    imports included (a cycle they hide is still a cycle)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for imp in internal:
        if imp.source != imp.target:
            graph[imp.source].add(imp.target)
            # importing a.b.c also runs a/__init__ and a/b/__init__
            parts = imp.target.split(".")
            for k in range(2, len(parts)):
                parent = ".".join(parts[:k])
                if not imp.source.startswith(parent + ".") and imp.source != parent:
                    graph[imp.source].add(parent)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(set(graph) | {t for ts in graph.values() for t in ts}):
        if v not in index:
            visit(v)
    return out


def counts() -> dict[str, int]:
    """Private cross-module names, function-local sparring imports, function-local external imports."""
    every = imports()
    internal = [i for i in every if i.target.startswith(PACKAGE)]
    private = sum(1 for i in internal for n in i.names if n.startswith("_") and not n.startswith("__")
                  and i.target != i.source)
    return {"private names across modules": private,
            "function-local sparring imports": sum(i.local for i in internal),
            "function-local external imports": sum(i.local for i in every if not i.target.startswith(PACKAGE)),
            "import cycles": len(cycles(internal))}


def graph_text() -> str:
    """Each layer with its modules' imports of lower layers, by package."""
    edges: dict[str, set[str]] = defaultdict(set)
    for imp in imports():
        if imp.target.startswith(PACKAGE + ".") and imp.source != TOP and layer_of(imp.source) is not None \
                and layer_of(imp.target) is not None and _owner(imp.source) != _owner(imp.target):
            edges[_owner(imp.source)].add(_owner(imp.target))
    lines = []
    for i, layer in enumerate(LAYERS):
        sep = " | " if i in INDEPENDENT else " : "
        lines.append(f"layer {len(LAYERS) - 1 - i}: " + sep.join(t.removeprefix("sparring.") for t in layer))
        for top in layer:
            if edges.get(top):
                lines.append(f"    {top.removeprefix('sparring.'):12s} -> "
                             + ", ".join(sorted(t.removeprefix("sparring.") for t in edges[top])))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph", action="store_true", help="print the layers and their imports")
    parser.add_argument("--counts", action="store_true", help="print the counts the issue asked for")
    args = parser.parse_args(argv)
    if args.graph:
        print(graph_text())
    if args.counts:
        for key, value in counts().items():
            print(f"{key}: {value}")
    if args.graph or args.counts:
        return 0
    problems = check()
    for line in problems:
        print(line)
    print(f"{len(problems)} problem(s)" if problems else "imports: layers, cycles, private names: ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
