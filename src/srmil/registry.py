"""The one registry class, after timm's ``register_model`` / ``create_model`` / ``list_models``.

Example:
    >>> MODELS = Registry("MIL model")
    >>> @MODELS.register("mean")
    ... class MeanPool: ...
    >>> MODELS.names()
    ['mean']
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from srmil.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name → factory map. Duplicate names raise; unknown names list the choices in one line."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under the lower-case ``name``."""
        key = name.lower()

        def deco(obj: T) -> T:
            if key in self._entries:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._entries[key] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        key = name.lower()
        if key not in self._entries:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; choose from: {', '.join(self.names())}"
            )
        return self._entries[key]

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the factory registered under ``name`` with the given arguments."""
        return self.get(name)(*args, **kwargs)  # type: ignore[operator]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(self._entries.items())  # registration order

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._entries

    def __len__(self) -> int:
        return len(self._entries)
