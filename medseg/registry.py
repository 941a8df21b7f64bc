"""Name -> factory registries with did-you-mean errors (models, schedulers, ...)."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from medseg.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories. Register with ``@registry.register("name")``.

    >>> models = Registry("model")
    >>> @models.register("tiny")
    ... def tiny(**kw): ...
    >>> models.names()
    ['tiny']
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            return factory

        return decorator

    def names(self) -> list[str]:
        return sorted(self._factories)

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._factories[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def create(self, name: str, *args, **kwargs) -> T:
        return self.get(name)(*args, **kwargs)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def unknown_message(self, name: str) -> str:
        hint = did_you_mean(name, self.names())
        hint = f" {hint[:1].upper()}{hint[1:]}" if hint else ""
        return f"unknown {self.kind} {name!r}.{hint} Valid names: {', '.join(self.names())}."


def did_you_mean(name: str, choices: Iterable[str], prefix: str = "") -> str:
    """``"did you mean 'a' or 'b'?"`` for the up to three ``choices`` closest to ``name``
    (each shown with ``prefix``, e.g. the dotted section of a config key), else ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    return f"did you mean {' or '.join(repr(prefix + c) for c in close)}?" if close else ""
