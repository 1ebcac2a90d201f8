"""PostgreSQL stops taking connections: the API answers 503 with Retry-After (not 500), the
job workers back off and stay alive, and everything recovers without a restart."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY
from sqlalchemy import select
from sqlalchemy.engine import make_url

from hub.db.models import Job
from hub.hookspecs import hookimpl
from hub.ops.dbstate import is_unavailable
from hub.testing.fixtures_core import ApiClient, pg_admin
from hub.web.app import create_app


class Counter:
    def __init__(self) -> None:
        self.ran = 0

    @hookimpl
    def vethub_job_handlers(self):
        async def tick(_hub, _job) -> None:
            self.ran += 1

        return {"test.tick": tick}


async def until(predicate, what: str, deadline_s: float = 60) -> None:
    deadline = time.monotonic() + deadline_s
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_api_503_then_recovery_without_restart(hub_factory, db_url: str) -> None:
    counter = Counter()
    hub = await hub_factory(plugins=[("counter", counter)])
    app = create_app(hub, start_hub=False, run_workers=True)
    client = TestClient(TestServer(app, host="127.0.0.1", port=0))
    await client.start_server()
    name = make_url(db_url).database
    admin = make_url(db_url).set(database="postgres").render_as_string(hide_password=False)
    try:
        api = await ApiClient(client, hub).as_role("operator")
        assert (await api.get("/api/companies")).status == 200
        before = REGISTRY.get_sample_value("vethub_database_unavailable_total", {"where": "api"}) or 0
        await pg_admin(admin, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await pg_admin(admin, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              f"WHERE datname = '{name}' AND pid <> pg_backend_pid()")
        response = await api.get("/api/companies")
        body = await response.json()
        assert response.status == 503, body
        assert body["error"]["code"] == "database_unavailable"
        assert int(response.headers["Retry-After"]) > 0
        assert (REGISTRY.get_sample_value("vethub_database_unavailable_total", {"where": "api"}) or 0) > before
        ready = await client.get("/readyz")
        assert ready.status == 503
        await asyncio.sleep(0)  # the workers meet the outage on their next claim
        assert hub.jobs._tasks and not any(t.done() for t in hub.jobs._tasks)  # noqa: SLF001
    finally:
        await pg_admin(admin, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    try:
        async def api_ok() -> bool:
            return (await api.get("/api/companies")).status == 200

        await until(api_ok, "the API to answer again")
        async with hub.transaction() as s:
            await hub.jobs.enqueue(s, "test.tick", {})

        async def job_ran() -> bool:
            async with hub.sessionmaker() as s:
                status = (await s.execute(select(Job.status).where(Job.kind == "test.tick"))).scalar_one()
            return status == "succeeded"

        await until(job_ran, "the workers to run a job after the outage")
        assert counter.ran == 1
    finally:
        await client.close()


def test_outage_errors_are_told_from_bugs() -> None:
    assert is_unavailable(ConnectionRefusedError(111, "refused"))
    wrapped = RuntimeError("wrapped")
    wrapped.__cause__ = OSError(104, "reset")
    assert is_unavailable(wrapped)
    assert not is_unavailable(ValueError("a bug"))
    assert not is_unavailable(KeyError("x"))
