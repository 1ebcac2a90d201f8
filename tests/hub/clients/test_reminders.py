"""Reminders over a simulated 60 days, with the injectable clock, on the synced practice."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, select

from hub.clients.models import ReminderStep
from hub.clients.reminders import SCHEDULE_NAME, run_reminders
from hub.db.models import Schedule
from hub.messaging import service
from hub.messaging.models import Communication
from hub.pims.models import Client, Patient, Reminder
from hub.pims.sync import sync_practices
from hub.testing.exports import PATIENT_COLUMNS, make_stable, write_csv
from plugins.policies.reminders import DEFAULT

from .conftest import DAYTIME, World

DAYS = 60
#: 08:00 UTC is 03:00 in New York: outside the practice's sending hours
NIGHT = timedelta(hours=-7)


def day_at(n: int) -> datetime:
    return DAYTIME + timedelta(days=n)


async def prepare(world: World, api_of) -> dict[str, int]:
    """An opted-out client, a deceased pet and a client whose alerts are all off, each with a
    reminder inside the 60 days; returns their ids."""
    hub = world.hub
    first, last = DAYTIME.date(), DAYTIME.date() + timedelta(days=DAYS)
    async with hub.sessionmaker() as s:
        rows = (await s.execute(
            select(Reminder.id, Patient.id, Patient.external_id, Client.id)
            .join(Patient, (Patient.practice_id == Reminder.practice_id)
                  & (Patient.external_id == Reminder.patient_external_id))
            .join(Client, (Client.practice_id == Patient.practice_id)
                  & (Client.external_id == Patient.client_external_id))
            .where(Reminder.practice_id == world.practice_id, Patient.status == "active",
                   Client.status == "active", Client.comms_disabled.is_(False),
                   Client.email.is_not(None),
                   Reminder.due_date >= first + timedelta(days=8),
                   Reminder.due_date <= last - timedelta(days=2))
            .order_by(Reminder.id))).all()
    picked: dict[str, int] = {}
    used: set[int] = set()
    for name in ("opted_out", "deceased", "alerts_off"):
        r = next(r for r in rows if r[3] not in used)
        used.add(r[3])
        picked[name + "_client"], picked[name + "_reminder"] = r[3], r[0]
        picked[name + "_patient"] = r[2]
    staff = await api_of("practice_staff", practice_id=world.practice_id)
    resp = await staff.put(f"/api/clients/{picked['opted_out_client']}/preferences", json={
        "items": [{"category": "reminder", "channel": ch, "allowed": False}
                  for ch in ("email", "sms", "postcard")]})
    assert resp.status == 200
    resp = await staff.put(f"/api/clients/{picked['alerts_off_client']}/alerts/settings",
                           json={"all_disabled": True})
    assert resp.status == 200
    # the pet dies: an incremental export from the PIMS
    pet = next(p for p in world.data.patients if p[0] == picked["deceased_patient"])
    changed = list(pet)
    changed[PATIENT_COLUMNS.index("status")] = "deceased"
    make_stable(write_csv(world.drop / "patients-2.csv", PATIENT_COLUMNS, [changed]))
    [result] = await sync_practices(hub, practice="oak")
    assert result.counts["patient"]["updated"] == 1
    return picked


def expected_steps(world: World, first: date, last: date) -> dict[tuple[str, str], date]:
    """(reminder external id, step) -> day, for every active reminder of a known pet."""
    pets = {p[0] for p in world.data.patients}
    out = {}
    for r in world.data.reminders:
        if r[4] != "active" or r[1] not in pets:
            continue
        due = date.fromisoformat(r[3])
        for plan in DEFAULT.steps:
            day = plan.day(due)
            if first - timedelta(days=plan.window_days) <= day <= last:
                out[(r[0], plan.name)] = day
    return out


async def simulate(world: World, hubs: list, days: int = DAYS) -> None:
    for n in range(days):
        world.clock.set(day_at(n) + NIGHT)
        for report in await asyncio.gather(*(run_reminders(h) for h in hubs)):
            assert report.written == 0  # outside sending hours
        world.clock.set(day_at(n))
        await asyncio.gather(*(run_reminders(h) for h in hubs))


async def check(world: World, picked: dict[str, int]) -> None:
    first = DAYTIME.date()
    last = first + timedelta(days=DAYS - 1)
    async with world.hub.sessionmaker() as s:
        steps = (await s.execute(
            select(ReminderStep, Reminder.external_id)
            .join(Reminder, Reminder.id == ReminderStep.reminder_id))).all()
        comms = (await s.execute(select(Communication).where(
            Communication.category == "reminder"))).scalars().all()
        clients = {c.id: c for c in (await s.execute(select(Client))).scalars()}
    got = {(ext, step.step): step.on_date for step, ext in steps}
    assert got == expected_steps(world, first, last)
    for step, _ext in steps:
        # written on its day, or on the first day for one up to 3 days late
        written = step.created_at.astimezone(UTC).date()
        assert written == max(step.on_date, first)
    # each communication belongs to exactly one step, and each step to at most one
    per_step = Counter((c.context["reminder_id"], c.context["reminder_step"]) for c in comms)
    assert per_step and max(per_step.values()) == 1
    by_key = {(s.reminder_id, s.step): s for s, _ in steps}
    for key in per_step:
        assert by_key[key].communication_id is not None
    assert sum(1 for s, _ in steps if s.communication_id) == len(comms)
    statuses = Counter(s.status for s, _ in steps)
    assert statuses["queued"] > 0 and statuses["suppressed"] > 0 and statuses["skipped"] > 0
    for step, _ in steps:
        client = clients.get(step.client_id)
        if step.status == "skipped":
            assert step.reason_code in ("patient_inactive", "patient_deceased",
                                        "unknown_client", "unknown_patient")
            assert step.communication_id is None
        elif step.status == "suppressed":
            assert step.reason_code and step.reason
        if client is not None and client.status == "inactive" and step.status != "skipped":
            assert (step.status, step.reason_code) == ("suppressed", "client_inactive")
    mine = [s for s, _ in steps if s.reminder_id == picked["opted_out_reminder"]]
    assert mine and {(s.status, s.reason_code) for s in mine} == {
        ("suppressed", "preference_opt_out")}
    dead = [s for s, _ in steps if s.reminder_id == picked["deceased_reminder"]]
    assert dead and {(s.status, s.reason_code) for s in dead} == {("skipped", "patient_deceased")}
    # alerts turned off for a client never stop its reminders
    calm = [s for s, _ in steps if s.reminder_id == picked["alerts_off_reminder"]]
    assert calm and all(s.status == "queued" and s.communication_id for s in calm)


async def test_sixty_days_of_reminders(world_factory, api_of_factory) -> None:
    world = await world_factory(300, seed=21)
    api_of = await api_of_factory(world)
    picked = await prepare(world, api_of)
    await simulate(world, [world.hub])
    await check(world, picked)
    # one more run on the last day changes nothing
    assert (await run_reminders(world.hub)).written == 0


async def test_the_schedule_runs_the_job(world: World) -> None:
    async with world.hub.sessionmaker() as s:
        schedule = await s.get(Schedule, SCHEDULE_NAME)
    assert schedule is not None and schedule.enabled and schedule.every_seconds == 900
    await world.hub.jobs.run_until_idle()
    async with world.hub.sessionmaker() as s:
        assert (await s.execute(select(func.count()).select_from(ReminderStep))).scalar_one() == 0
    world.clock.advance(seconds=900)  # the first tick is one interval after the first start
    await world.hub.jobs.run_until_idle()
    async with world.hub.sessionmaker() as s:
        written = (await s.execute(select(func.count()).select_from(ReminderStep))).scalar_one()
        sent = (await s.execute(select(func.count()).select_from(Communication).where(
            Communication.status == "sent"))).scalar_one()
    assert written > 0 and sent > 0


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # replicas share PostgreSQL
async def test_two_hubs_never_send_a_step_twice(world_factory, api_of_factory, hub_factory,
                                                db_url: str) -> None:
    world = await world_factory(300, seed=21)
    api_of = await api_of_factory(world)
    picked = await prepare(world, api_of)
    second = await hub_factory(world.config, clock=world.clock)
    await simulate(world, [world.hub, second])
    await check(world, picked)


async def test_calendar(world: World, api_of) -> None:
    staff = await api_of("practice_staff", practice_id=world.practice_id)
    await run_reminders(world.hub)
    today = DAYTIME.date()
    resp = await staff.get(f"/api/practices/{world.practice_id}/reminders",
                           params={"from": (today - timedelta(days=3)).isoformat(),
                                   "to": (today + timedelta(days=30)).isoformat()})
    assert resp.status == 200, await resp.text()
    days = (await resp.json())["days"]
    assert len(days) == 34
    by_day = {d["date"]: d["steps"] for d in days}
    assert all(s["status"] != "planned" for d in days[:3] for s in d["steps"])
    written = [s for s in by_day[today.isoformat()] if s["status"] != "planned"]
    planned = [s for d in days[4:] for s in d["steps"] if s["status"] == "planned"]
    assert written and planned
    assert all(s["client"] is None or s["client"]["name"] for s in written + planned)
    expected = expected_steps(world, today + timedelta(days=1), today + timedelta(days=30))
    assert len(planned) == sum(1 for day in expected.values() if day > today)
    for bad in ({"from": "2026-03-10", "to": "2026-03-01"},
                {"from": "2026-01-01", "to": "2026-12-31"}, {"from": "soon", "to": "2026-03-01"}):
        assert (await staff.get(f"/api/practices/{world.practice_id}/reminders",
                                params=bad)).status == 422
    other = await api_of("practice_staff", practice_id=world.other_id)
    admin = await api_of("company_admin", company_id=world.company_id)
    q = {"from": today.isoformat(), "to": today.isoformat()}
    for who in (other, admin):
        assert (await who.get(f"/api/practices/{world.practice_id}/reminders",
                              params=q)).status == 404


async def test_bounced_address_is_not_used_again(world: World) -> None:
    """A step goes to the next channel the verdict allows when the email bounced."""
    async with world.hub.sessionmaker() as s:
        c = (await s.execute(select(Client).where(Client.email.is_not(None)).limit(1))).scalar_one()
    async with world.hub.transaction() as s:
        await service.mark_address_invalid(s, world.hub, kind="email", address=c.email,
                                           reason="550", source="bounce")
    await run_reminders(world.hub)
    async with world.hub.sessionmaker() as s:
        comms = (await s.execute(select(Communication).where(
            Communication.client_id == c.id, Communication.category == "reminder"))).scalars().all()
    assert all(comm.channel != "email" or comm.status == "suppressed" for comm in comms)
