"""Core fixtures: databases, configs, hubs, API clients. See :mod:`hub.testing.plugin`."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.engine import make_url

from hub.auth import issue_token
from hub.clock import Clock, FrozenClock
from hub.config import HubConfig, load_config
from hub.core import Hub
from hub.plugins import get_plugin_manager
from hub.web.app import create_app

PG_ENV = "VETHUB_TEST_POSTGRES_URL"
REQUIRE_PG_ENV = "VETHUB_REQUIRE_POSTGRES"

__all__ = [
    "api", "db_url", "pg_admin", "free_port", "frozen_clock", "hub", "hub_factory", "make_config", "postgres_url",
    "write_config", "ApiClient", "database_rows", "deep_merge", "dump_toml",
]


def _pg_admin_url() -> str | None:
    url = os.environ.get(PG_ENV)
    if not url:
        if os.environ.get(REQUIRE_PG_ENV) == "1":
            pytest.fail(f"{REQUIRE_PG_ENV}=1 but {PG_ENV} is not set", pytrace=False)
        pytest.skip(f"PostgreSQL tests need {PG_ENV} (an asyncpg URL, e.g. "
                    "postgresql+asyncpg://postgres@127.0.0.1:5432/test)")
    return url


async def pg_admin(url: str, sql: str) -> None:
    import asyncpg

    u = make_url(url)
    conn = await asyncpg.connect(user=u.username, password=u.password, host=u.host or "127.0.0.1",
                                 port=u.port or 5432, database=u.database or "postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _run(coro: Awaitable[Any]) -> Any:
    # Sync fixtures run outside the test's loop; a private loop keeps them independent of it.
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test (dropped afterwards)."""
    admin = _pg_admin_url()
    assert admin is not None
    name = f"vethub_t_{uuid.uuid4().hex[:12]}"
    try:
        _run(pg_admin(admin, f'CREATE DATABASE "{name}"'))
    except Exception as err:
        if os.environ.get(REQUIRE_PG_ENV) == "1":
            pytest.fail(f"cannot create a PostgreSQL test database at {PG_ENV}: {err}", pytrace=False)
        pytest.skip(f"PostgreSQL at {PG_ENV} is not usable: {err}")
    yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    _run(pg_admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database URL per test, on SQLite and (when configured) on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    return request.getfixturevalue("postgres_url")


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture
def make_config(db_url: str, tmp_path: Path) -> Callable[..., HubConfig]:
    """``make_config({...})`` -> a validated HubConfig on the test database.

    The mapping is deep-merged over a base with a temporary data dir, the HTTP port 0 and
    fast job backoff, so tests are quick and independent.
    """

    def _make(data: dict[str, Any] | None = None, **sections: Any) -> HubConfig:
        return load_config("<test>", data=base_config_data(db_url, tmp_path, data, **sections), env={})

    return _make


def base_config_data(db_url: str, tmp_path: Path, data: dict[str, Any] | None = None, **sections: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "hub": {"data_dir": str(tmp_path / "var"), "public_url": "http://127.0.0.1:8080",
                "secret_key": "test-secret-key-of-at-least-32-bytes"},
        "database": {"url": db_url},
        "http": {"host": "127.0.0.1", "port": 0},
        "jobs": {"workers": 2, "backoff_initial": 0.01, "backoff_max": 0.05, "poll_interval": 0.05,
                 "lease_seconds": 30, "shutdown_grace": 5},
        # No periodic reminder sweep unless a test asks for one: its ticks would be extra jobs
        # in every test that advances the clock and counts what ran.
        "clients": {"reminder_every_seconds": 0},
    }
    return deep_merge(deep_merge(base, data or {}), sections)


@pytest.fixture
def frozen_clock() -> FrozenClock:
    return FrozenClock()


@pytest_asyncio.fixture
async def hub_factory(make_config: Callable[..., HubConfig]) -> AsyncIterator[Callable[..., Awaitable[Hub]]]:
    """``await hub_factory(config_data, clock=..., plugins=[(name, obj)])`` -> a started Hub."""
    hubs: list[Hub] = []

    async def _factory(data: dict[str, Any] | None = None, *, clock: Clock | None = None,
                       plugins: list[tuple[str, Any]] | None = None, config: HubConfig | None = None) -> Hub:
        config = config or make_config(data)
        pm = get_plugin_manager(config.plugins.disabled, extra=plugins or ())
        hub = Hub(config, pm, clock)
        hubs.append(hub)
        await hub.start(upgrade=True)  # a fresh test database, on either backend
        return hub

    yield _factory
    for hub in reversed(hubs):
        await hub.stop()


@pytest_asyncio.fixture
async def hub(hub_factory: Callable[..., Awaitable[Hub]]) -> Hub:
    return await hub_factory()


class ApiClient:
    """An aiohttp TestClient for a hub app; ``as_role`` gives a client carrying a real token."""

    def __init__(self, client: TestClient, hub: Hub, headers: dict[str, str] | None = None) -> None:
        self.client, self.hub, self.headers = client, hub, headers or {}

    async def as_role(self, role: str, *, company_id: int | None = None, practice_id: int | None = None,
                      name: str = "test") -> ApiClient:
        async with self.hub.transaction() as session:
            token, _ = await issue_token(session, role=role, company_id=company_id,
                                         practice_id=practice_id, name=name)
        return ApiClient(self.client, self.hub, {"Authorization": f"Bearer {token}"})

    def _headers(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs["headers"] = {**self.headers, **(kwargs.get("headers") or {})}
        return kwargs

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.get(path, **self._headers(kw))

    def post(self, path: str, **kw: Any) -> Any:
        return self.client.post(path, **self._headers(kw))

    def patch(self, path: str, **kw: Any) -> Any:
        return self.client.patch(path, **self._headers(kw))

    def put(self, path: str, **kw: Any) -> Any:
        return self.client.put(path, **self._headers(kw))

    def delete(self, path: str, **kw: Any) -> Any:
        return self.client.delete(path, **self._headers(kw))

    def make_url(self, path: str) -> Any:
        return self.client.make_url(path)


@pytest_asyncio.fixture
async def api(hub: Hub) -> AsyncIterator[ApiClient]:
    """The hub's app on a loopback port (workers not running; call ``hub.jobs.run_until_idle()``)."""
    app = create_app(hub, start_hub=False, run_workers=False)
    client = TestClient(TestServer(app, host="127.0.0.1", port=0))
    await client.start_server()
    try:
        yield ApiClient(client, hub)
    finally:
        await client.close()


def dump_toml(data: dict[str, Any]) -> str:
    import tomli_w

    return tomli_w.dumps(data)


@pytest.fixture
def write_config(db_url: str, tmp_path: Path) -> Callable[..., Path]:
    """``write_config({...})`` -> path of a TOML file on the test database (for subprocesses)."""

    def _write(data: dict[str, Any] | None = None, name: str = "vethub.toml", **sections: Any) -> Path:
        path = tmp_path / name
        path.write_text(dump_toml(base_config_data(db_url, tmp_path, data, **sections)), encoding="utf-8")
        return path

    return _write


async def database_rows(hub: Hub) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table the hub knows, by table name (rows sorted): take it before and
    after a request that must be refused, and compare, to show that nothing was written."""
    from hub.db import all_models  # noqa: F401  (every table in the metadata)
    from hub.db.base import Base

    async with hub.engine.connect() as conn:
        return {
            table.name: sorted((tuple(row) for row in await conn.execute(table.select())), key=repr)
            for table in Base.metadata.sorted_tables
        }


@pytest.fixture
def free_port() -> Iterator[int]:
    """A port kept for this test, for a child process that must listen on a known port.

    The port stays bound here, with SO_REUSEADDR and not listening, until the test ends: the
    kernel gives it to no one else (not to a bind to port 0, not to an outgoing connection),
    while a server that sets SO_REUSEADDR — as the hub's receivers, asyncio's and socketserver's
    servers do — can listen on it, and listen again after a restart. A port merely found free
    and released could be taken by another process before the child binds it.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()[1]
