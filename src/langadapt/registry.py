"""Registries of interchangeable parts, chosen in recipes by short names.

A recipe names components (`init: {method: fvt}`), never import paths, so a recipe cannot
import arbitrary code. An unknown name lists the valid ones.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

from langadapt.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    help: str


class Registry(Generic[T]):
    """A named table of components of one kind (init methods, sources, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        REGISTRIES[kind] = self

    def register(self, name: str, help: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind}: '{name}' registered twice")
            self._entries[name] = Entry(name, obj, help)
            return obj

        return decorator

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self.names(), n=1)
        maybe = f" (did you mean '{close[0]}'?)" if close else ""
        return f"unknown {self.kind} '{name}'{maybe}; valid: {', '.join(self.names())}"

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise ConfigError([self.unknown_message(name)])
        return self._entries[name].obj


REGISTRIES: dict[str, Registry[Any]] = {}
