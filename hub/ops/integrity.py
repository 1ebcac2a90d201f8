"""Database integrity: SQLite's ``PRAGMA quick_check`` at start-up and then periodically.

A page damaged in the middle of the file leaves ``SELECT 1`` working, so the hub looked ready
while every write that touched the page failed. ``quick_check`` reads every page (not the
indexes' agreement with their tables, which ``integrity_check`` adds at many times the cost);
it runs on a connection of its own in a thread, and in WAL mode it blocks no writer. On
PostgreSQL page checksums and the server's own monitoring do this job: the check is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

EVENT = "database.integrity_failed"


@dataclass
class IntegrityState:
    """The latest database integrity check's result, which the readiness check reports."""
    ok: bool = True
    detail: str = "not checked yet"
    checked: bool = False


def sqlite_path(url: str) -> str | None:
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return u.database


def quick_check(path: str) -> tuple[bool, str]:
    """Blocking: ``PRAGMA quick_check`` on the SQLite file at ``path``, read-only."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as err:
        return False, f"{path}: cannot open: {err}"
    try:
        rows = [r[0] for r in conn.execute("PRAGMA quick_check(20)")]
    except sqlite3.DatabaseError as err:
        return False, f"{path}: {err}"
    finally:
        conn.close()
    if rows == ["ok"]:
        return True, f"{path}: quick_check ok"
    return False, f"{path}: quick_check found damage: {'; '.join(rows)[:500]}"


async def check(hub: Any, state: IntegrityState) -> IntegrityState:
    path = sqlite_path(hub.config.database.url)
    if path is None:
        state.ok, state.detail, state.checked = True, "not applicable (PostgreSQL)", True
        return state
    ok, detail = await asyncio.to_thread(quick_check, path)
    was_ok = state.ok or not state.checked
    state.ok, state.detail, state.checked = ok, detail, True
    if not ok and was_ok:
        log.error("database integrity check failed: %s; remedy: stop the hub and restore the "
                  "last backup (vethub restore), see docs/operator-guide.md", detail)
        with contextlib.suppress(Exception):  # the damage may be where events are written
            from hub import events

            async with hub.transaction() as session:
                await events.record(session, EVENT, f"database integrity check failed: {detail}",
                                    reason="corrupt", level=logging.ERROR)
    return state


async def periodic(hub: Any, state: IntegrityState, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            await check(hub, state)
        except Exception:
            log.exception("database integrity check could not run")
