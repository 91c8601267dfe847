"""A registry of named backends, picked by a field of the cluster spec."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from drover.spec import ClusterSpec

T = TypeVar("T")


class Registry(Generic[T]):
    """Backend factories by name; `open` builds the one the spec's `field` names."""

    def __init__(self, what: str, field: str, pick: Callable[[ClusterSpec], str]) -> None:
        self.what, self.field, self.pick = what, field, pick
        self.factories: dict[str, Callable[[ClusterSpec], T]] = {}

    def register(self, name: str) -> Callable[[Callable[[ClusterSpec], T]],
                                              Callable[[ClusterSpec], T]]:
        def add(factory: Callable[[ClusterSpec], T]) -> Callable[[ClusterSpec], T]:
            self.factories[name] = factory
            return factory
        return add

    def open(self, spec: ClusterSpec) -> T:
        name = self.pick(spec)
        factory = self.factories.get(name)
        if factory is None:
            raise ValueError(f"{self.field}: no {self.what} {name!r}; "
                             f"known: {', '.join(sorted(self.factories))}")
        return factory(spec)
