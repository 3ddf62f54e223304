"""Registry[T]: named entries with metadata, "did you mean" on a typo, and plugins from entry points.

A registry with an entry-point ``group`` also holds what installed packages declare there, e.g. in a
plugin's pyproject.toml:

    [project.entry-points."sparring.defenses"]
    my-filter = "my_package.my_filter"

Naming the module is enough: importing it registers its entries (a value "module:attr" imports the module
too). Plugins load on the registry's first lookup, once; ``reload_plugins()`` looks again (after installing one
in a running process).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from .errors import ConfigError, UnknownNameError

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Generic[T]):
    """A mapping name -> (object, metadata) that a config or the CLI can name.

    ``wrap(name, obj, meta) -> obj`` (optional) replaces each object as it is registered: the attack
    registry puts its shared eps guard around every attack that way.

    Example:
        >>> MODELS = Registry("model")
        >>> @MODELS.register("tiny", dataset="digits")
        ... def tiny(): ...
    """

    def __init__(self, kind: str, *, group: str | None = None,
                 wrap: Callable[[str, T, dict[str, Any]], T] | None = None) -> None:
        self.kind, self.group, self._wrap = kind, group, wrap
        self._items: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        self._plugins_loaded = group is None
        self._plugins: dict[str, str] = {}  # entry point name -> its value, once loaded

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            stored = self._wrap(name, obj, dict(meta)) if self._wrap is not None else obj
            self._items[name] = stored
            self._meta[name] = dict(meta)
            return stored

        return decorator

    def reload_plugins(self) -> list[str]:
        """Import the modules the ``group`` entry points name that are not loaded yet; their names."""
        self._plugins_loaded = True
        if self.group is None:
            return []
        loaded = []
        for point in entry_points(group=self.group):
            if point.name in self._plugins:
                continue
            self._plugins[point.name] = point.value
            try:
                module, _, attr = point.value.partition(":")
                importlib.import_module(module.strip())
            except Exception as exc:  # a broken plugin names itself, in one line
                raise ConfigError(f"the {self.kind} plugin {point.name!r} ({point.value}) failed to import: "
                                  f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
            loaded.append(point.name)
        return loaded

    def _ensure(self) -> None:
        if not self._plugins_loaded:
            self.reload_plugins()

    def get(self, name: str) -> T:
        self._ensure()
        if name not in self._items:
            close = difflib.get_close_matches(str(name), self._items, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            known = ", ".join(sorted(self._items))
            raise UnknownNameError(f"unknown {self.kind} {name!r}{hint} (known: {known})")
        return self._items[name]

    def meta(self, name: str) -> dict[str, Any]:
        self.get(name)
        return dict(self._meta[name])

    def names(self) -> list[str]:
        self._ensure()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._ensure()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._ensure()
        return len(self._items)
