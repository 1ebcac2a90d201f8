"""Every section against a practice of 20,000 clients synced from the file-export generator."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text

from hub.clients import search
from hub.clients.models import ReminderStep, SurveyRequest
from hub.clients.reminders import run_reminders
from hub.pims.models import Client
from hub.testing.exports import CLIENT_COLUMNS

from .test_search import _plan

COL = {name: i for i, name in enumerate(CLIENT_COLUMNS)}

pytestmark = pytest.mark.slow


async def test_every_section_at_twenty_thousand(world_factory, api_of_factory) -> None:
    world = await world_factory(20_000, seed=1, extra={
        "clients": {"practices": {"oak": {"loyalty": True}}}})
    api_of = await api_of_factory(world)
    staff = await api_of("practice_staff", practice_id=world.practice_id)
    hub = world.hub
    async with hub.sessionmaker() as s:
        assert (await s.execute(select(func.count()).select_from(Client))).scalar_one() == 20_000
        pg = s.bind.dialect.name == "postgresql"
        if pg:
            await s.execute(text("ANALYZE"))
        stmt = search.client_query([world.practice_id], "garc", "US")
        sql = str(stmt.compile(s.bind, compile_kwargs={"literal_binds": True}))
        plan = _plan((await s.execute(text(("EXPLAIN " if pg else "EXPLAIN QUERY PLAN ") + sql))).all())
        assert ("Seq Scan on clients" not in plan) if pg else ("USING INDEX" in plan), plan
    # find: a name prefix, then paging through a common one
    found = await (await staff.get("/api/clients", params={"q": "garc", "limit": 200})).json()
    assert found["items"] and all("garcia" in search_key_of(c) for c in found["items"])
    row = world.data.clients[12_345]
    by_id = await (await staff.get("/api/clients", params={"q": row[COL["client_id"]]})).json()
    [item] = by_id["items"]
    cid = item["id"]
    # details, preferences, alerts
    details = await (await staff.get(f"/api/clients/{cid}")).json()
    assert details["summary"]["pims_id"] == row[COL["client_id"]]
    resp = await staff.put(f"/api/clients/{cid}/preferences", json={
        "items": [{"category": "marketing", "channel": "email", "allowed": False}]})
    assert resp.status == 200
    assert (await staff.get(f"/api/clients/{cid}/alerts")).status == 200
    # reminders and surveys: one day's run, then the calendar
    report = await run_reminders(hub, surveys=True)
    assert report.written > 0 and report.surveys > 0
    async with hub.sessionmaker() as s:
        assert (await s.execute(select(func.count()).select_from(ReminderStep))).scalar_one() \
            == report.written
        assert (await s.execute(select(func.count()).select_from(SurveyRequest))).scalar_one() > 0
    today = world.clock.now().date()
    # the first run also wrote the steps up to three days late: on their own days
    cal = await (await staff.get(f"/api/practices/{world.practice_id}/reminders", params={
        "from": (today - timedelta(days=3)).isoformat(), "to": today.isoformat()})).json()
    steps = [s for d in cal["days"] for s in d["steps"]]
    assert len(steps) == report.written and all(s["status"] != "planned" for s in steps)
    # loyalty under concurrency, then the timeline
    assert (await staff.post(f"/api/clients/{cid}/loyalty")).status in (201, 409)
    await staff.post(f"/api/clients/{cid}/loyalty/adjustments",
                     json={"coins": 100, "reason": "scale"})
    statuses = await asyncio.gather(*(staff.post(f"/api/clients/{cid}/loyalty/redemptions",
                                                 json={"reward": "nail trim"}) for _ in range(6)))
    assert sorted(r.status for r in statuses) == [201, 201, 409, 409, 409, 409]
    timeline = await (await staff.get(f"/api/clients/{cid}/timeline")).json()
    assert {"loyalty", "preference"} <= {i["kind"] for i in timeline["items"]}


def search_key_of(item: dict) -> str:
    from hub.pims.normalise import search_key

    return search_key(f"{item['first_name']} {item['last_name']} {item['last_name']}")
