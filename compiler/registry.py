"""One registry shape for every kind of pluggable thing: logics, searches, regimes, datasets,
models, back ends and CLI commands.

A `Registry` maps a name to an entry (a class or a factory) with a one-line help text; the CLI
takes its choices, help and defaults from it, so nothing is listed twice by hand. Unknown names
raise the registry's error type with a did-you-mean hint and the list of what is available.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")
_NAME = re.compile(r"[a-z_][a-z0-9_\-]*")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    value: T
    help: str = ""


class Registry(Generic[T]):
    """Named entries of one kind. `kind` is the word used in messages ("logic", "search")."""

    def __init__(self, kind: str, error: Callable[[str], Exception] = ValueError,
                 aliases: dict[str, str] | None = None):
        self.kind = kind
        self._error = error
        self._entries: dict[str, Entry[T]] = {}
        self._aliases: dict[str, str] = dict(aliases or {})

    def register(self, name: str, value: T | None = None, help: str = "", *, replace: bool = True):
        """Add an entry; usable as a decorator: `@REG.register("name", help="...")`."""
        key = name.lower()
        if not _NAME.fullmatch(key):
            raise ValueError(f"a {self.kind} name is a word (letters, digits, _ and -), not {name!r}")

        def add(v: T) -> T:
            if not replace and key in self._entries:
                raise ValueError(f"{self.kind} '{key}' is registered already")
            doc = help or (getattr(v, "__doc__", None) or "").strip().split("\n")[0]
            self._entries[key] = Entry(key, v, doc)
            return v

        return add if value is None else add(value)

    def alias(self, alias: str, name: str) -> None:
        self._aliases[alias.lower()] = name.lower()

    def resolve(self, name: str) -> str:
        """The canonical name for `name` (a registered name beats an alias); error if unknown."""
        key = str(name).lower()
        if key in self._entries:
            return key
        if key in self._aliases and self._aliases[key] in self._entries:
            return self._aliases[key]
        raise self._error(self.unknown_message(str(name)))

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name.lower(), [*self._entries, *self._aliases], n=3,
                                          cutoff=0.6)
        close = list(dict.fromkeys(self._aliases.get(c, c) for c in close))
        hint = ("; did you mean " + " or ".join(f"'{c}'" for c in close) + "?") if close else ""
        return f"unknown {self.kind} '{name}'{hint} (available: {', '.join(self.names())})"

    def get(self, name: str) -> T:
        return self._entries[self.resolve(name)].value

    def entry(self, name: str) -> Entry[T]:
        return self._entries[self.resolve(name)]

    def names(self) -> list[str]:
        return list(self._entries)

    def help_text(self) -> str:
        """'name: help; name: help' for an argparse help string."""
        return "; ".join(f"{e.name}: {e.help}" if e.help else e.name for e in self._entries.values())

    def __contains__(self, name: object) -> bool:
        try:
            self.resolve(str(name))
            return True
        except Exception:
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> list[tuple[str, Any]]:
        return [(k, e.value) for k, e in self._entries.items()]


__all__ = ["Registry", "Entry"]
