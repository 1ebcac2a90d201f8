"""Which clients of a page own an active patient: matched within the client's own practice,
never across practices that reuse a PIMS id, and only by active patients."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select

from hub.clients import search
from hub.core import Hub
from hub.db.models import Practice
from hub.pims.models import Client, Patient

CONFIG: dict[str, Any] = {"practices": [{"slug": "a", "name": "A"}, {"slug": "b", "name": "B"}]}


async def test_owners_are_matched_within_each_practice(hub_factory: Any) -> None:
    hub: Hub = await hub_factory(CONFIG)
    now = datetime.now(UTC)
    async with hub.transaction() as session:
        a, b = (await session.execute(select(Practice.id).order_by(Practice.id))).scalars().all()
        # the same PIMS ids at both practices; only A's c1 and B's c2 have an active patient
        await session.execute(insert(Client), [
            {"practice_id": pid, "external_id": ext, "first_name": "Ann", "last_name": "Smith",
             "synced_at": now, "name_key": "ann smith", "surname_key": "smith ann"}
            for pid in (a, b) for ext in ("c1", "c2", "c3")])
        await session.execute(insert(Patient), [
            {"practice_id": a, "external_id": "p1", "client_external_id": "c1", "name": "Rex",
             "synced_at": now, "name_key": "rex"},
            {"practice_id": b, "external_id": "p2", "client_external_id": "c2", "name": "Tib",
             "synced_at": now, "name_key": "tib"},
            {"practice_id": a, "external_id": "p3", "client_external_id": "c3", "name": "Old",
             "synced_at": now, "name_key": "old", "status": "inactive"}])

    clients = await hub.read(lambda conn: conn.execute(select(Client.id, Client.practice_id, Client.external_id)).all())
    owners = await hub.read(lambda conn: search.active_patient_owners_on(conn, list(clients)))
    assert owners == {(a, "c1"), (b, "c2")}
    only_b = [c for c in clients if c.practice_id == b]
    assert await hub.read(lambda conn: search.active_patient_owners_on(conn, only_b)) == {(b, "c2")}
    assert await hub.read(lambda conn: search.active_patient_owners_on(conn, [])) == set()
