"""Named extension points: scorers, engines, corpus formats and rewards are each looked up in a ``Registry``.

Adding one is a file that defines it plus one ``register`` line (docs/extending.md). An entry may be given as
a ``"package.module:attr"`` string, imported on first use, so that naming an engine does not import its
heavy dependencies (torch, vllm) until a config asks for it.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar, overload

from pydantic_core import PydanticCustomError

from .config import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries of one kind (``what``, e.g. "scorer") chosen by one config key (``key``, e.g. "scorer.kind")."""

    def __init__(self, what: str, key: str) -> None:
        self.what, self.key = what, key
        self._entries: dict[str, T | str] = {}

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, entry: T | str) -> T | str: ...

    def register(self, name: str, entry: Any = None) -> Any:
        """Make ``entry`` available as ``name``; without ``entry``, a decorator. Registering a name again
        replaces it (a test or a plugin may override a built-in)."""
        if entry is None:
            def decorator(obj: T) -> T:
                self._entries[name] = obj
                return obj

            return decorator
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise ConfigError(self.unknown(name))
        entry = self._entries[name]
        if isinstance(entry, str):  # "package.module:attr", imported now that it is used (looked up each
            module, _, attr = entry.partition(":")  # time, so a patched module attribute is what is used)
            return getattr(importlib.import_module(module), attr)
        return entry

    def unknown(self, name: str) -> str:
        return f"{self.key}: unknown {self.what} {name!r}; known: {', '.join(sorted(self._entries))}"

    def names(self) -> tuple[str, ...]:
        """Registered names, in the order they were registered (the order CLI choices and errors list)."""
        return tuple(self._entries)

    def check(self, value: str, extra: Iterable[str] = ()) -> str:
        """For a pydantic field validator: ``value`` when it is a registered name (or one of ``extra``), else
        the error a ``Literal`` of those names gives, so config errors read as they did before registries."""
        allowed = (*extra, *self._entries)
        if value not in allowed:
            quoted = [repr(n) for n in allowed]
            expected = " or ".join([", ".join(quoted[:-1]), quoted[-1]] if len(quoted) > 1 else quoted)
            raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})
        return value

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
