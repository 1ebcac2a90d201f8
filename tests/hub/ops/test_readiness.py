"""Readiness tells the truth: storage under the watermark or not writable, a damaged SQLite
database, a PIMS drop folder that does not exist — each makes ``/readyz`` 503, naming why."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY
from sqlalchemy import select

from hub.auth import issue_token
from hub.core import Hub
from hub.db.models import HubEvent
from hub.web.app import create_app


async def readyz(hub: Hub) -> tuple[int, dict[str, Any]]:
    """``/readyz`` as an operator sees it: every check by name, with its detail."""
    client = TestClient(TestServer(create_app(hub, start_hub=False, run_workers=False), host="127.0.0.1", port=0))
    await client.start_server()
    try:
        async with hub.transaction() as session:
            token, _ = await issue_token(session, role="operator", name="readiness test")
        response = await client.get("/readyz", headers={"Authorization": f"Bearer {token}"})
        return response.status, await response.json()
    finally:
        await client.close()


async def test_ready_with_room_and_a_sound_database(hub_factory) -> None:
    hub = await hub_factory({"operations": {"min_free_bytes": 1024}})
    status, body = await readyz(hub)
    assert status == 200, body
    assert body["checks"]["storage:data_dir"]["ok"]
    assert body["checks"]["database:integrity"]["ok"]
    assert REGISTRY.get_sample_value("vethub_ready") == 1


async def test_storage_below_the_watermark_is_not_ready(hub_factory) -> None:
    hub = await hub_factory({"operations": {"min_free_bytes": 2**62}})
    status, body = await readyz(hub)
    assert status == 503
    check = body["checks"]["storage:data_dir"]
    assert not check["ok"] and "below the watermark" in check["detail"] and "min_free_bytes" in check["detail"]
    assert REGISTRY.get_sample_value("vethub_check_ok", {"check": "storage:data_dir"}) == 0


async def test_storage_that_cannot_be_written_is_not_ready(hub_factory) -> None:
    hub = await hub_factory({"operations": {"min_free_bytes": 0}})
    with read_only(hub.data_dir):
        status, body = await readyz(hub)
    assert status == 503 and "cannot write" in body["checks"]["storage:data_dir"]["detail"]


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """``path`` made unwritable: a read-only tmpfs over it for root (who ignores modes), else
    its mode."""
    if os.geteuid() != 0:
        path.chmod(0o500)
        try:
            yield
        finally:
            path.chmod(0o700)
        return
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)],
                          capture_output=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs: {proc.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


async def test_missing_pims_drop_dir_is_not_ready(hub_factory, tmp_path: Path) -> None:
    hub = await hub_factory({"operations": {"min_free_bytes": 0}, "practices": [{
        "slug": "p", "name": "P", "country": "US", "timezone": "UTC",
        "pims": [{"connector": "file_export", "name": "files", "drop_dir": str(tmp_path / "no-such-dir"),
                  "sync_every_seconds": 0}]}]})
    status, body = await readyz(hub)
    assert status == 503
    check = body["checks"]["pims:p/files"]
    assert not check["ok"] and "does not exist" in check["detail"]


async def test_a_drop_folder_inside_the_data_dir_is_created(hub_factory, tmp_path: Path) -> None:
    """As the quick start's is: the hub creates it, so a fresh hub is ready at once."""
    drop = tmp_path / "var" / "pims-drop" / "p"
    hub = await hub_factory({"operations": {"min_free_bytes": 0}, "practices": [{
        "slug": "p", "name": "P", "country": "US", "timezone": "UTC",
        "pims": [{"connector": "file_export", "name": "files", "drop_dir": str(drop),
                  "sync_every_seconds": 0}]}]})
    assert drop.is_dir()
    status, body = await readyz(hub)
    assert body["checks"]["pims:p/files"]["ok"], body
    assert status == 200, body


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_damaged_sqlite_page_is_not_ready(hub_factory, db_url: str, tmp_path: Path) -> None:
    """Corruption in the middle of the file: ``SELECT 1`` still works, quick_check does not."""
    hub = await hub_factory({"operations": {"min_free_bytes": 0}})
    async with hub.transaction() as s:
        s.add_all([HubEvent(kind="filler", message="x" * 400) for _ in range(3000)])
    await hub.stop()
    path = tmp_path / "hub.db"
    with sqlite3.connect(path) as conn:  # fold the WAL into the file, so the damage is the file's
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = path.stat().st_size
    page = sqlite3.connect(path).execute("PRAGMA page_size").fetchone()[0]
    target = (size // page // 2) * page  # a page in the middle: the filler table's leaves
    with open(path, "r+b") as f:
        f.seek(target)
        f.write(b"\xde\xad\xbe\xef" * (page // 4))
    hub = await hub_factory(config=hub.config)
    status, body = await readyz(hub)
    assert body["checks"]["database"]["ok"], body  # SELECT 1 is fooled
    assert status == 503
    check = body["checks"]["database:integrity"]
    assert not check["ok"] and "hub.db" in check["detail"]
    hub2_events = []
    try:
        async with hub.sessionmaker() as s:
            hub2_events = list((await s.execute(
                select(HubEvent.kind).where(HubEvent.kind == "database.integrity_failed"))).scalars())
    except Exception:  # noqa: BLE001 - the damage may be where events live; the log has it
        hub2_events = ["unreadable"]
    assert hub2_events
