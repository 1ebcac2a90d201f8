"""Fixtures for the accounts tests: a hub whose email goes to a real aiosmtpd sink, whose DICOM
receiver listens on port 0, with two companies (each with an email for the Cc)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from hub.clock import FrozenClock
from hub.core import Hub
from hub.db.models import Company
from hub.testing.fixtures_core import ApiClient, deep_merge
from hub.testing.smtp import SmtpSink
from hub.web.app import create_app

T0 = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
READ_RIGHT = "admin@readright.example"
SCAN_CO = "desk@scanco.example"


@dataclass
class World:
    hub: Hub
    api: ApiClient
    sink: SmtpSink
    clock: FrozenClock
    companies: dict[str, int]

    async def run_jobs(self) -> int:
        return await self.hub.jobs.run_until_idle()

    def mails(self, to: str | None = None) -> list[EmailMessage]:
        msgs = [m.message for m in self.sink.messages]
        return [m for m in msgs if to is None or to in str(m["To"])]

    async def as_company(self, slug: str) -> ApiClient:
        return await self.api.as_role("company_admin", company_id=self.companies[slug])

    async def as_operator(self) -> ApiClient:
        return await self.api.as_role("operator")


def config_data(sink: SmtpSink, tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "email": {"backend": "smtp", "host": "127.0.0.1", "port": sink.port, "tls": "none",
                  "from_address": "hub@vethub.example", "from_name": "VetHub", "connections": 2},
        "dicom": {"port": 0, "ae_title": "VETHUB", "storage_root": str(tmp_path / "dicom"),
                  "stable_age": 30},
        "companies": [
            {"slug": "read-right", "name": "ReadRight", "email": READ_RIGHT,
             "modalities": ["DX", "CT", "US"]},
            {"slug": "scan-co", "name": "ScanCo", "email": SCAN_CO, "modalities": ["DX", "CT", "MR"]},
        ],
        "onboarding": {"dicom_host": "dicom.vethub.example", "dicom_port": 11112, "called_ae": "VETHUB",
                       "rate_limit": 5},
    }
    return deep_merge(base, overrides)


@pytest_asyncio.fixture
async def world_factory(hub_factory, smtp_sink, tmp_path) -> Callable[..., Awaitable[World]]:
    clients: list[TestClient] = []

    async def make(clock: FrozenClock | None = None, plugins: list[tuple[str, Any]] | None = None,
                   **overrides: Any) -> World:
        clock = clock or FrozenClock(T0)
        hub = await hub_factory(config_data(smtp_sink, tmp_path, **overrides), clock=clock, plugins=plugins)
        app = create_app(hub, start_hub=False, run_workers=False)
        client = TestClient(TestServer(app, host="127.0.0.1", port=0))
        await client.start_server()
        clients.append(client)
        async with hub.sessionmaker() as s:
            companies = {c.slug: c.id for c in (await s.execute(select(Company))).scalars()}
        return World(hub, ApiClient(client, hub), smtp_sink, clock, companies)

    yield make
    for client in clients:
        await client.close()


@pytest_asyncio.fixture
async def world(world_factory) -> World:
    return await world_factory()


async def add_practice(hub: Hub, slug: str, accounts: dict[int, list[str]], *,
                       email: str | None = None) -> tuple[int, dict[int, int]]:
    """A practice (as onboarding would leave it) with approved accounts {company_id: modalities}."""
    from hub.db.models import Account, Practice

    async with hub.transaction() as s:
        p = Practice(slug=slug, name=slug.replace("-", " ").title(), email=email or f"desk@{slug}.example",
                     country="GB", address={})
        s.add(p)
        await s.flush()
        ids = {}
        for company_id, modalities in accounts.items():
            a = Account(practice_id=p.id, company_id=company_id, approved_for_access=True,
                        modalities=modalities, status="active")
            s.add(a)
            await s.flush()
            ids[company_id] = a.id
        return p.id, ids


async def add_case(hub: Hub, practice_id: int, account_id: int, company_id: int, at: datetime) -> int:
    """A case submitted at ``at`` (history data, written as the imaging domain would)."""
    from hub.imaging.models import Case, Study

    async with hub.transaction() as s:
        study = Study(practice_id=practice_id, study_instance_uid=f"1.2.3.{at.timestamp():.0f}",
                      modalities=["DX"], instance_count=1, size_bytes=1, status="stable",
                      first_received_at=at, last_received_at=at)
        s.add(study)
        await s.flush()
        case = Case(practice_id=practice_id, study_id=study.id, account_id=account_id,
                    company_id=company_id, status="delivered", submitted_by="test", created_at=at,
                    updated_at=at)
        s.add(case)
        await s.flush()
        return case.id
