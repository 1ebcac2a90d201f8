"""The retention calendar: a practice's reminder steps by day, planned and written."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.clients.models import ReminderStep
from hub.clients.reminders import (
    HORIZON,
    facts_of,
    load_reminders,
    local_now,
    practice_facts,
    schedule_for,
)
from hub.db.models import Practice
from hub.errors import Invalid
from hub.pims.models import Client, Reminder

MAX_DAYS = 93


async def calendar(session: AsyncSession, hub: Any, practice: Practice, first: date,
                   last: date) -> list[dict[str, Any]]:
    """Days from ``first`` to ``last``: each step written (with its status) or still planned
    (from today on, as the schedule says today)."""
    if last < first:
        raise Invalid("'to' is before 'from'", field="to")
    if (last - first).days >= MAX_DAYS:
        raise Invalid(f"at most {MAX_DAYS} days at a time", field="to")
    facts = practice_facts(hub, practice)
    today = local_now(facts, hub.clock.now()).date()
    days: dict[date, list[dict[str, Any]]] = defaultdict(list)
    written = (await session.execute(
        select(ReminderStep, Reminder.service, Reminder.due_date)
        .join(Reminder, Reminder.id == ReminderStep.reminder_id)
        .where(ReminderStep.practice_id == practice.id, ReminderStep.on_date >= first,
               ReminderStep.on_date <= last))).all()
    seen = set()
    for step, service, due in written:
        seen.add((step.reminder_id, step.step))
        days[step.on_date].append({
            "reminder_id": step.reminder_id, "step": step.step, "status": step.status,
            "service": service, "due_date": due.isoformat() if due else None,
            "client_id": step.client_id, "channel": step.channel,
            "communication_id": step.communication_id, "reason_code": step.reason_code})
    start = max(first, today)
    if start <= last:
        rows = await load_reminders(session, practice.id, first=start - HORIZON,
                                    last=last + HORIZON)
        for reminder, patient, client_id in rows:
            schedule = schedule_for(hub, facts_of(reminder, patient), facts)
            if schedule is None or reminder.due_date is None:
                continue
            for plan in schedule.steps:
                day = plan.day(reminder.due_date)
                if start <= day <= last and (reminder.id, plan.name) not in seen:
                    days[day].append({
                        "reminder_id": reminder.id, "step": plan.name, "status": "planned",
                        "service": reminder.service, "due_date": reminder.due_date.isoformat(),
                        "client_id": client_id, "channel": None, "communication_id": None,
                        "reason_code": None})
    names = await _client_names(session, {s["client_id"] for v in days.values() for s in v
                                          if s["client_id"]})
    out = []
    day = first
    while day <= last:
        steps = sorted(days.get(day, []), key=lambda s: (s["reminder_id"], s["step"]))
        for s in steps:
            s["client"] = ({"id": s["client_id"], "name": names.get(s["client_id"])}
                           if s["client_id"] else None)
            del s["client_id"]
        out.append({"date": day.isoformat(), "steps": steps})
        day += timedelta(days=1)
    return out


async def _client_names(session: AsyncSession, ids: set[int]) -> dict[int, str]:
    out: dict[int, str] = {}
    wanted = sorted(ids)
    for i in range(0, len(wanted), 900):
        rows = await session.execute(select(Client.id, Client.first_name, Client.last_name)
                                     .where(Client.id.in_(wanted[i:i + 900])))
        for cid, first, last in rows:
            out[cid] = " ".join(p for p in (first, last) if p) or f"client {cid}"
    return out
