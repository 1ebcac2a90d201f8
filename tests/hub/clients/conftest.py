"""A practice synced from the file-export generator (as a PIMS drop would arrive), a second
practice, a company, and API clients for each role."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from hub.clock import FrozenClock
from hub.core import Hub
from hub.db.models import Company, Practice
from hub.pims.sync import sync_practices
from hub.testing.exports import ExportData, generate, make_stable, write_export
from hub.testing.fixtures_core import ApiClient
from hub.testing.smtp import SmtpSink
from hub.web.app import create_app

# 15:00 UTC = 10:00 in New York: inside the default sending hours, outside quiet hours
DAYTIME = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


@dataclass
class World:
    hub: Hub
    clock: FrozenClock
    data: ExportData
    practice_id: int  # "oak", synced from the export
    other_id: int  # "elm", no clients
    company_id: int
    drop: Path
    sink: SmtpSink
    config: dict[str, Any]  # what the hub was built from: a second hub on the same database


def email_section(sink: SmtpSink) -> dict[str, Any]:
    return {"backend": "smtp", "host": "127.0.0.1", "port": sink.port, "tls": "none",
            "from_address": "hub@vet.example", "from_name": "VetHub", "connections": 4}


@pytest_asyncio.fixture
async def world_factory(hub_factory, pims_practice, tmp_path: Path,
                        smtp_sink: SmtpSink) -> Callable[..., Awaitable[World]]:
    async def make(clients: int = 200, *, seed: int = 5, clock: FrozenClock | None = None,
                   data: ExportData | None = None, extra: dict[str, Any] | None = None) -> World:
        drop = tmp_path / "drop"
        drop.mkdir(exist_ok=True)
        data = data or generate(clients, seed=seed)
        make_stable(*write_export(drop, data).values())
        clock = clock or FrozenClock(DAYTIME)
        config = {
            "practices": [
                pims_practice([{"connector": "file_export", "drop_dir": str(drop),
                                "sync_every_seconds": 0}], timezone="America/New_York"),
                pims_practice([], slug="elm")],
            "companies": [{"slug": "rads", "name": "Rads"}],
            "accounts": [{"practice": "oak", "company": "rads"},
                         {"practice": "elm", "company": "rads"}],
            "email": email_section(smtp_sink),
            "clients": {"reminder_every_seconds": 900},
            **(extra or {}),
        }
        hub = await hub_factory(config, clock=clock)
        [result] = await sync_practices(hub, practice="oak")
        assert result.status == "succeeded", result.error
        async with hub.sessionmaker() as s:
            ids = {p.slug: p.id for p in (await s.execute(select(Practice))).scalars()}
            company = (await s.execute(select(Company.id))).scalar_one()
        return World(hub, clock, data, ids["oak"], ids["elm"], company, drop, smtp_sink, config)

    return make


@pytest_asyncio.fixture
async def world(world_factory) -> World:
    return await world_factory()


@pytest_asyncio.fixture
async def api_of_factory():
    """``api_of = await api_of_factory(world)``; ``await api_of(role, ...)`` -> an ApiClient
    on the world's hub carrying a real token."""
    clients: list[TestClient] = []

    async def make(world: World) -> Callable[..., Awaitable[ApiClient]]:
        app = create_app(world.hub, start_hub=False, run_workers=False)
        client = TestClient(TestServer(app, host="127.0.0.1", port=0))
        await client.start_server()
        clients.append(client)
        base = ApiClient(client, world.hub)

        async def as_role(role: str, **kw: Any) -> ApiClient:
            return await base.as_role(role, **kw)

        return as_role

    yield make
    for client in clients:
        await client.close()


@pytest_asyncio.fixture
async def api_of(world: World, api_of_factory):
    return await api_of_factory(world)
