"""Fixtures for the messaging tests: a hub whose email goes to a real aiosmtpd sink, and a
practice with clients and patients written straight into the PIMS tables (as a sync would)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio

from hub.clock import FrozenClock
from hub.core import Hub
from hub.db.models import Account, Company, Practice
from hub.pims.models import Client, Patient
from hub.testing.smtp import SmtpSink

# 15:00 UTC = 10:00 in New York: outside quiet hours
DAYTIME = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


@dataclass
class World:
    hub: Hub
    sink: SmtpSink
    clock: FrozenClock
    practice_id: int
    other_practice_id: int
    clients: dict[str, int] = field(default_factory=dict)


def email_section(sink: SmtpSink, **kw: Any) -> dict[str, Any]:
    return {"backend": "smtp", "host": "127.0.0.1", "port": sink.port, "tls": "none",
            "from_address": "hub@vet.example", "from_name": "Parkside Vets", "connections": 4, **kw}


async def add_client(hub: Hub, practice_id: int, key: str, *, status: str = "active",
                     comms_disabled: bool = False, email: str | None = "", mobile: str | None = "+12025550143",
                     pets: list[str] = ("active",), address: bool = True) -> int:
    async with hub.transaction() as s:
        c = Client(practice_id=practice_id, external_id=key, first_name=key.title(), last_name="Smith",
                   status=status, comms_disabled=comms_disabled,
                   email=(f"{key}@example.org" if email == "" else email), phone_mobile=mobile,
                   address_line1="1 Main St" if address else None, city="Springfield" if address else None,
                   region="IL", postcode="62701", country="US")
        s.add(c)
        for i, pet in enumerate(pets):
            s.add(Patient(practice_id=practice_id, external_id=f"{key}-p{i}", client_external_id=key,
                          name=f"Rex {i}", status=pet))
        await s.flush()
        return c.id


@pytest_asyncio.fixture
async def world_factory(hub_factory, smtp_sink) -> Callable[..., Awaitable[World]]:
    async def make(data: dict[str, Any] | None = None, *, email: dict[str, Any] | None = None,
                   clock: FrozenClock | None = None) -> World:
        clock = clock or FrozenClock(DAYTIME)
        config = {"email": email_section(smtp_sink, **(email or {}))}
        config.update(data or {})
        hub = await hub_factory(config, clock=clock)
        async with hub.transaction() as s:
            p = Practice(slug="parkside", name="Parkside Vets", country="US", timezone="America/New_York",
                         email="desk@parkside.example", address={})
            o = Practice(slug="other", name="Other Vets", country="US", timezone="UTC", address={})
            co = Company(slug="readers", name="Readers", email="ops@readers.example", modalities=[], settings={})
            s.add_all([p, o, co])
            await s.flush()
            # staff tokens need an approved account
            s.add_all([Account(practice_id=p.id, company_id=co.id, approved_for_access=True, modalities=[]),
                       Account(practice_id=o.id, company_id=co.id, approved_for_access=True, modalities=[])])
            pid, oid = p.id, o.id
        return World(hub, smtp_sink, clock, pid, oid)

    return make


@pytest_asyncio.fixture
async def world(world_factory) -> World:
    return await world_factory()


@pytest.fixture
def client_maker() -> Callable[..., Awaitable[int]]:
    """``await client_maker(hub, practice_id, "ann", status=..., pets=[...])`` -> client id."""
    return add_client


@pytest.fixture
def reminder_context() -> dict[str, Any]:
    return {"patient_name": "Rex", "service": "rabies vaccine", "due_date": "2026-03-09"}
