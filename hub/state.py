"""Per-hub state under typed keys (``hub.state[KEY]``); see :class:`HubKey`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast, overload

T = TypeVar("T")


class HubKey(Generic[T]):
    """A typed key for per-hub state kept by a domain or a plugin (``hub.state[KEY]``).

    Like aiohttp's ``AppKey``: the key's type parameter is the value's type, so ``mypy`` checks
    what is stored and read, and two plugins cannot collide on a string. State lives and dies
    with its hub, never in a module global shared by every hub in the process.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<HubKey {self.name}>"


class HubState:
    """The per-hub state mapping: ``state[KEY]``, ``state.get(KEY)``, ``state.setdefault(KEY, f)``."""

    def __init__(self) -> None:
        self._values: dict[HubKey[Any], Any] = {}

    def __getitem__(self, key: HubKey[T]) -> T:
        return cast(T, self._values[key])

    def __setitem__(self, key: HubKey[T], value: T) -> None:
        self._values[key] = value

    def __contains__(self, key: HubKey[Any]) -> bool:
        return key in self._values

    @overload
    def get(self, key: HubKey[T]) -> T | None: ...

    @overload
    def get(self, key: HubKey[T], default: T) -> T: ...

    def get(self, key: HubKey[T], default: T | None = None) -> T | None:
        return cast("T | None", self._values.get(key, default))

    def setdefault(self, key: HubKey[T], factory: Callable[[], T]) -> T:
        if key not in self._values:
            self._values[key] = factory()
        return cast(T, self._values[key])

    def pop(self, key: HubKey[T], default: T | None = None) -> T | None:
        return cast("T | None", self._values.pop(key, default))
