"""PostgreSQL closes a pooled connection (pg_terminate_backend, a restart, an idle timeout): the
hub notices without pinging before every checkout, and nobody sees an error for it.

The pool has no ``pool_pre_ping`` (three round trips per checkout on asyncpg): a checkout
refuses a connection its driver knows is closed (:func:`hub.db.engine.refuse_closed`), and a
read that meets one closed too recently to be known runs once more on a fresh connection
(:func:`hub.db.transactions.run_read`)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select, text
from sqlalchemy.engine import Connection, make_url

from hub.core import Hub
from hub.db.models import Practice
from hub.testing.fixtures_core import ApiClient, pg_admin
from hub.web.app import create_app

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)

CONFIG: dict[str, Any] = {"practices": [{"slug": "clinic-a", "name": "Clinic A"}]}


def _admin_url(db_url: str) -> str:
    return make_url(db_url).set(database="postgres").render_as_string(hide_password=False)


async def _kill_all(db_url: str) -> None:
    name = make_url(db_url).database
    await pg_admin(_admin_url(db_url), "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                       f"WHERE datname = '{name}' AND pid <> pg_backend_pid()")


def _backend_pid(conn: Connection) -> int:
    return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


async def test_the_api_and_writes_carry_on_after_the_server_kills_their_connections(
        hub_factory: Any, db_url: str) -> None:
    hub: Hub = await hub_factory(CONFIG)
    client = TestClient(TestServer(create_app(hub, start_hub=False, run_workers=False),
                                   host="127.0.0.1", port=0))
    await client.start_server()
    try:
        operator = await ApiClient(client, hub).as_role("operator")
        assert (await operator.get("/api/practices")).status == 200
        before = await hub.read(_backend_pid)
        await _kill_all(db_url)
        response = await operator.get("/api/practices")
        assert response.status == 200, await response.text()
        assert [p["slug"] for p in (await response.json())["items"]] == ["clinic-a"]
        assert await hub.read(_backend_pid) != before
        async with hub.transaction() as session:  # a write takes a live connection too
            assert (await session.execute(select(Practice.slug))).scalar_one() == "clinic-a"
    finally:
        await client.close()


async def test_a_read_whose_connection_dies_under_it_runs_again(hub_factory: Any, db_url: str) -> None:
    """The kill lands after the checkout and before the statement, so no check could have
    seen it: the statement fails as a disconnect, and the read runs again on a new connection."""
    hub: Hub = await hub_factory(CONFIG)
    await hub.read(_backend_pid)  # a pooled connection to be killed
    runs: list[int] = []

    def read(conn: Connection) -> str:
        pid = _backend_pid(conn) if not runs else 0
        if not runs:  # the first run kills its own connection from another thread, then reads
            killer = threading.Thread(target=asyncio.run, args=(pg_admin(
                _admin_url(db_url), f"SELECT pg_terminate_backend({pid})"),))
            killer.start()
            killer.join()
        runs.append(pid)
        return str(conn.execute(select(Practice.slug)).scalar_one())

    assert await hub.read(read) == "clinic-a"
    assert len(runs) == 2
