"""The one name -> builder registry (in the spirit of fvcore's): errors list what exists.

`MODELS` holds the architectures (`python -m paperkit.train --model NAME`, the studies' reference models);
`STUDENTS` the distillation study's < 1 M students, built without arguments. Builders register themselves
with `@MODELS.register(...)` where they are defined; a registry imports its builders' modules the first time
it is asked, so a lookup never depends on which module happened to be imported before.
"""
from __future__ import annotations

import importlib
from typing import Callable, Generic, Sequence, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Named builders of one kind; `modules` are imported (once) before the first lookup."""

    def __init__(self, kind: str, modules: Sequence[str] = ()) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._modules = tuple(modules)
        self._loaded = not self._modules

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            key = name or obj.__name__  # type: ignore[attr-defined]
            if key in self._items:
                raise KeyError(f"{self.kind} {key!r} is already registered")
            self._items[key] = obj
            return obj
        return deco

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for m in self._modules:
                importlib.import_module(m)

    def get(self, name: str) -> T:
        self._load()
        if name not in self._items:
            raise KeyError(f"no {self.kind} named {name!r}; registered: {sorted(self._items)}")
        return self._items[name]

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items


MODELS: Registry[Callable[..., object]] = Registry(
    "model", ("paperkit.models.pta", "paperkit.models.texture", "paperkit.models.teacher"))
STUDENTS: Registry[Callable[[], object]] = Registry("student", ("paperkit.models.students",))
