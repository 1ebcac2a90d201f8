"""The operations plugin: the ``[operations]`` section, storage and database-integrity
readiness checks, and the periodic integrity check."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from hub.hookspecs import hookimpl
from hub.ops import integrity
from hub.ops.config import OperationsConfig, operations_config
from hub.ops.storage import storage_health, storage_roots
from hub.state import HubKey

log = logging.getLogger(__name__)

INTEGRITY: HubKey[integrity.IntegrityState] = HubKey("operations.integrity")
TASKS: HubKey[list[asyncio.Task[Any]]] = HubKey("operations.tasks")


def integrity_state(hub: Any) -> integrity.IntegrityState:
    return hub.state.setdefault(INTEGRITY, integrity.IntegrityState)


@hookimpl
def vethub_config_sections() -> dict[str, type[OperationsConfig]]:
    return {"operations": OperationsConfig}


@hookimpl
def vethub_job_handlers() -> dict[str, Any]:
    from hub.ops.retention import JOB_KIND, retention_job

    return {JOB_KIND: retention_job}


@hookimpl
def vethub_startup(hub: Any) -> Awaitable[None]:
    return _start(hub)


async def _start(hub: Any) -> None:
    from hub.ops.retention import ensure_schedule

    await ensure_schedule(hub)
    state = await integrity.check(hub, integrity_state(hub))
    tasks = hub.state.setdefault(TASKS, list)
    every = operations_config(hub).integrity_check_every
    if every > 0 and integrity.sqlite_path(hub.config.database.url):
        tasks.append(asyncio.create_task(integrity.periodic(hub, state, every), name="vethub-integrity"))
    # in the background: a large image store takes a while to walk, and start-up must not wait
    tasks.append(asyncio.create_task(_reconcile(hub), name="vethub-reconcile"))


async def _reconcile(hub: Any) -> None:
    from hub.ops.reconcile import reconcile

    try:
        report = await reconcile(hub)
    except Exception:
        log.exception("reconciling the image store at start-up failed")
        return
    if report is not None and not report.clean:
        log.warning("image store: %d file(s) without a row quarantined, %d row(s) without a file "
                    "(vethub events list --kind dicom.orphan_files / dicom.missing_files)",
                    len(report.quarantined), len(report.missing))


@hookimpl
def vethub_shutdown(hub: Any) -> Awaitable[None]:
    return _stop(hub)


async def _stop(hub: Any) -> None:
    for task in hub.state.pop(TASKS) or []:
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


@hookimpl
def vethub_cli_commands() -> list[Any]:
    from hub.ops import cli

    return cli.commands()
