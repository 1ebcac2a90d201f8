"""The operations plugin: the ``[operations]`` section, storage and database-integrity
readiness checks, and the periodic integrity check."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from typing import Any
from weakref import WeakKeyDictionary

from hub.hookspecs import hookimpl
from hub.ops import integrity
from hub.ops.config import OperationsConfig, operations_config
from hub.ops.storage import storage_health, storage_roots

_integrity: WeakKeyDictionary[Any, integrity.IntegrityState] = WeakKeyDictionary()
_tasks: WeakKeyDictionary[Any, asyncio.Task[None]] = WeakKeyDictionary()


def integrity_state(hub: Any) -> integrity.IntegrityState:
    return _integrity.setdefault(hub, integrity.IntegrityState())


@hookimpl
def vethub_config_sections() -> dict[str, type[OperationsConfig]]:
    return {"operations": OperationsConfig}


@hookimpl
def vethub_startup(hub: Any) -> Awaitable[None]:
    return _start(hub)


async def _start(hub: Any) -> None:
    state = await integrity.check(hub, integrity_state(hub))
    every = operations_config(hub).integrity_check_every
    if every > 0 and integrity.sqlite_path(hub.config.database.url):
        _tasks[hub] = asyncio.create_task(integrity.periodic(hub, state, every), name="vethub-integrity")


@hookimpl
def vethub_shutdown(hub: Any) -> Awaitable[None]:
    return _stop(hub)


async def _stop(hub: Any) -> None:
    task = _tasks.pop(hub, None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@hookimpl
def vethub_health_checks(hub: Any) -> dict[str, Callable[[], Awaitable[tuple[bool, str]]]]:
    checks: dict[str, Callable[[], Awaitable[tuple[bool, str]]]] = {
        f"storage:{name}": functools.partial(storage_health, hub, root)
        for name, root in storage_roots(hub).items()
    }
    checks["database:integrity"] = functools.partial(_integrity_health, hub)
    return checks


async def _integrity_health(hub: Any) -> tuple[bool, str]:
    state = integrity_state(hub)
    return state.ok, state.detail
