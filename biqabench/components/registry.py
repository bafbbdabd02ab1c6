"""Typed registries of components (backbones, heads, pretrainers, datasets).

One registry per kind.  Names are unique within a kind; registering a name twice is an error
that names both plugins, because silently letting one win makes results depend on install
order.  Unknown names raise :class:`UnknownComponentError` with the closest existing names.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, TypeVar

from biqabench.base.errors import BiqaError

T = TypeVar("T")


class UnknownComponentError(BiqaError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class DuplicateComponentError(BiqaError):
    def __init__(self, message: str, name: str = "", plugins: tuple[str, ...] = ()):
        super().__init__(message)
        self.name, self.plugins = name, plugins


@dataclass
class Entry(Generic[T]):
    name: str
    obj: T
    plugin: str
    description: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Name -> component, remembering which plugin registered it."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        #: appended to unknown-name errors, e.g. which plugins failed to load (the name may be theirs)
        self.missing_hint = ""
        self._contested: dict[str, str] = {}
        #: asked for names nobody registered: ``resolver(name)`` may add them (lazy model zoos)
        self.resolver: Callable[[str], None] | None = None

    def add(self, name: str, obj: T, *, plugin: str = "<direct>", description: str = "", **meta) -> None:
        if not name or not isinstance(name, str):
            raise BiqaError(f"{self.kind} names must be non-empty strings (plugin {plugin!r} gave {name!r})")
        if name in self._entries:
            other = self._entries[name].plugin
            raise DuplicateComponentError(
                f"{self.kind} {name!r} is registered by two plugins: {other!r} and {plugin!r}; "
                f"uninstall one or restrict plugins with BIQABENCH_PLUGINS", name=name, plugins=(other, plugin))
        self._entries[name] = Entry(name, obj, plugin, description, dict(meta))

    def remove(self, name: str) -> None:
        self._entries.pop(name, None)

    def mark_contested(self, error: DuplicateComponentError) -> None:
        """Remember a name two plugins claimed: using it is an error naming both, so results never
        depend silently on which plugin happened to load first."""
        self._contested[error.name] = str(error)

    def entry(self, name: str) -> Entry[T]:
        if name in self._contested:
            raise DuplicateComponentError(self._contested[name], name=name)
        if name not in self._entries and self.resolver is not None:
            self.resolver(name)
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownComponentError(unknown_name_message(self.kind, name, self.names())
                                        + self.missing_hint) from None

    def get(self, name: str) -> T:
        return self.entry(name).obj

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


def unknown_name_message(kind: str, name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    avail = ", ".join(choices) if choices else "none installed"
    return f"unknown {kind} {name!r}{hint} (available: {avail})"
