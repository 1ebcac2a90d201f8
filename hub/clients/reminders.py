"""The reminder run: each due step of each PIMS reminder, exactly once, through the verdict.

A durable periodic job (schedule ``clients-reminders``) calls :func:`run_reminders`. For each
practice whose local time is inside its sending hours it reads the reminders the PIMS lists as
due around today, asks ``vethub_reminder_schedule`` for each one's steps, and for every step
due today that has no row yet writes a :class:`~hub.clients.models.ReminderStep` with
``INSERT … ON CONFLICT (reminder_id, step) DO NOTHING RETURNING``: the rows it gets back are
this run's to send, in the same transaction as their communications. Two hubs running at once
therefore split the steps and never send one twice; a run killed mid-way leaves nothing
half-done (the steps it had not committed are written by the next run).

A step is *skipped* (with its reason) when its patient is not active or its owner is unknown;
otherwise the message goes through :func:`hub.messaging.outbound.queue_bulk`, which asks the
contact verdict for each channel in the schedule's order: an inactive, comms-disabled or
opted-out client gets a *suppressed* step and communication, with the verdict's reasons.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from hub.clients.config import clients_config
from hub.clients.models import ReminderStep, StepStatus
from hub.clients.schedule import PracticeReminderFacts, ReminderFacts, ReminderSchedule
from hub.db.base import table_of
from hub.db.models import Practice
from hub.messaging.outbound import queue_bulk
from hub.pims.models import Client, Patient, Reminder
from hub.pims.records import PatientStatus, ReminderStatus

log = logging.getLogger(__name__)

JOB_KIND = "clients.reminders"
SCHEDULE_NAME = "clients-reminders"
#: how far around today reminders are read: wider than any sensible schedule's steps
HORIZON = timedelta(days=120)
#: steps sent per transaction
CHUNK = 500
_STEPS = table_of(ReminderStep)


@dataclass
class DueStep:
    """One step to write: plain values read in one query, no ORM objects."""

    reminder_id: int
    service: str | None
    due_date: date
    patient_name: str | None
    #: None when the PIMS has no such patient
    patient_status: str | None
    client_id: int | None
    step: str
    on_date: date
    channels: tuple[str, ...]


@dataclass
class RunReport:
    """What one reminder run did: practices seen, steps written and their statuses."""
    practices: int = 0
    written: int = 0
    surveys: int = 0
    by_status: dict[str, int] = field(default_factory=dict)

    def count(self, status: str) -> None:
        self.by_status[status] = self.by_status.get(status, 0) + 1
        self.written += 1


def practice_facts(hub: Any, practice: Practice) -> PracticeReminderFacts:
    cfg = clients_config(hub).practice(practice.slug)
    return PracticeReminderFacts(practice.id, practice.slug, practice.timezone or "UTC",
                                 (cfg.sending_hours_start, cfg.sending_hours_end))


def local_now(facts: PracticeReminderFacts, now: datetime) -> datetime:
    return now.astimezone(ZoneInfo(facts.timezone))


def in_sending_hours(facts: PracticeReminderFacts, now: datetime) -> bool:
    start, end = facts.sending_hours
    t = local_now(facts, now).time()
    return start <= t < end if start <= end else (t >= start or t < end)


def schedule_for(hub: Any, reminder: ReminderFacts,
                 practice: PracticeReminderFacts) -> ReminderSchedule | None:
    return hub.pm.hook.vethub_reminder_schedule(reminder=reminder, practice=practice)


def facts_of(reminder: Reminder, patient: Patient | None) -> ReminderFacts:
    assert reminder.due_date is not None
    return ReminderFacts(reminder.id, reminder.practice_id, reminder.service, reminder.due_date,
                         patient.status if patient else "unknown",
                         patient.species if patient else None)


async def load_reminders(session: AsyncSession, practice_id: int,
                         ids: Sequence[int] | None = None, first: date | None = None,
                         last: date | None = None,
                         ) -> list[tuple[Reminder, Patient | None, int | None]]:
    """Active reminders (these ids, or due in [first, last]) with their patient and owner's
    client id."""
    stmt = (
        select(Reminder, Patient, Client.id)
        .outerjoin(Patient, and_(Patient.practice_id == Reminder.practice_id,
                                 Patient.external_id == Reminder.patient_external_id))
        .outerjoin(Client, and_(Client.practice_id == Reminder.practice_id,
                                Client.external_id == Patient.client_external_id))
        .where(Reminder.practice_id == practice_id, Reminder.status == ReminderStatus.ACTIVE)
    )
    if ids is not None:
        stmt = stmt.where(Reminder.id.in_(ids))
    if first is not None and last is not None:
        stmt = stmt.where(Reminder.due_date >= first, Reminder.due_date <= last)
    return [(r, p, c) for r, p, c in (await session.execute(stmt)).all()]


async def due_steps(hub: Any, session: AsyncSession, facts: PracticeReminderFacts,
                    today: date) -> list[DueStep]:
    """Steps due today (or late within their window) that have no row yet.

    Every tick of the job asks this, and most ticks find nothing: the schedules are decided
    over plain tuples (no ORM objects), and only the reminders with a step due are loaded.
    """
    light = await session.execute(
        select(Reminder.id, Reminder.service, Reminder.due_date, Patient.status, Patient.species)
        .outerjoin(Patient, and_(Patient.practice_id == Reminder.practice_id,
                                 Patient.external_id == Reminder.patient_external_id))
        .where(Reminder.practice_id == facts.id, Reminder.status == ReminderStatus.ACTIVE,
               Reminder.due_date >= today - HORIZON, Reminder.due_date <= today + HORIZON))
    done = set((await session.execute(
        select(ReminderStep.reminder_id, ReminderStep.step).where(
            ReminderStep.practice_id == facts.id,
            ReminderStep.on_date >= today - HORIZON - HORIZON))).all())
    wanted: dict[int, list[tuple[str, date, tuple[str, ...]]]] = {}
    for rid, service, due, patient_status, species in light:
        if due is None:  # the query asks for a due date in range; a NULL cannot match
            continue
        schedule = schedule_for(hub, ReminderFacts(rid, facts.id, service, due,
                                                   patient_status or "unknown", species), facts)
        if schedule is None:
            continue
        for plan in schedule.steps:
            day = plan.day(due)
            if day <= today < day + timedelta(days=plan.window_days + 1) \
                    and (rid, plan.name) not in done:
                wanted.setdefault(rid, []).append((plan.name, day, tuple(schedule.channels)))
    out = []
    ids = sorted(wanted)
    for i in range(0, len(ids), 900):
        rows = await session.execute(
            select(Reminder.id, Reminder.service, Reminder.due_date, Patient.name, Patient.status,
                   Patient.id, Client.id)
            .outerjoin(Patient, and_(Patient.practice_id == Reminder.practice_id,
                                     Patient.external_id == Reminder.patient_external_id))
            .outerjoin(Client, and_(Client.practice_id == Reminder.practice_id,
                                    Client.external_id == Patient.client_external_id))
            .where(Reminder.practice_id == facts.id, Reminder.status == ReminderStatus.ACTIVE,
                   Reminder.id.in_(ids[i:i + 900])))
        for rid, service, due, name, status, patient_id, client_id in rows:
            assert due is not None  # it was in range in the first query
            for step, day, channels in wanted[rid]:
                out.append(DueStep(rid, service, due, name,
                                   None if patient_id is None else status, client_id,
                                   step, day, channels))
    out.sort(key=lambda s: (s.on_date, s.reminder_id, s.step))
    return out


def _skip_reason(step: DueStep) -> tuple[str, str] | None:
    if step.patient_status is None:
        return "unknown_patient", "the PIMS has no such patient"
    if step.patient_status != PatientStatus.ACTIVE:
        return (f"patient_{step.patient_status}",
                f"{step.patient_name or 'the patient'} is {step.patient_status} in the PIMS")
    if step.client_id is None:
        return "unknown_client", "the patient's owner is not in the PIMS"
    return None


async def claim(session: AsyncSession, practice_id: int, steps: Sequence[DueStep],
                now: datetime) -> set[tuple[int, str]]:
    """Insert the step rows; return the (reminder id, step) pairs this transaction wrote."""
    if not steps:
        return set()
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    values = [{"practice_id": practice_id, "reminder_id": s.reminder_id, "client_id": s.client_id,
               "step": s.step, "on_date": s.on_date, "status": StepStatus.skipped.value,
               "created_at": now} for s in steps]
    stmt = insert(ReminderStep).on_conflict_do_nothing(
        index_elements=["reminder_id", "step"]).returning(ReminderStep.reminder_id,
                                                          ReminderStep.step)
    won: set[tuple[int, str]] = set()
    for row in await session.execute(stmt, values):
        won.add((row[0], row[1]))
    return won


def _rounds(steps: Iterable[DueStep]) -> list[list[DueStep]]:
    """Split into rounds with at most one step per client (a campaign call takes one
    context per client): a client's n-th step goes to round n."""
    rounds: list[list[DueStep]] = []
    taken: dict[int, int] = {}
    for step in steps:
        assert step.client_id is not None
        n = taken.get(step.client_id, 0)
        taken[step.client_id] = n + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(step)
    return rounds


async def send_chunk(session: AsyncSession, hub: Any, facts: PracticeReminderFacts,
                     steps: Sequence[DueStep], report: RunReport) -> None:
    now = hub.clock.now()
    won = await claim(session, facts.id, steps, now)
    mine = [s for s in steps if (s.reminder_id, s.step) in won]
    updates: list[dict[str, Any]] = []
    sendable = []
    for step in mine:
        reason = _skip_reason(step)
        if reason is not None:
            updates.append(_outcome(step, StepStatus.skipped, reason=reason))
        else:
            sendable.append(step)
    for group in _rounds(sendable):
        by_channels: dict[tuple[str, ...], list[DueStep]] = {}
        for step in group:
            by_channels.setdefault(step.channels, []).append(step)
        for channels, batch in by_channels.items():
            queued = await queue_bulk(
                session, hub, client_ids=[s.client_id for s in batch if s.client_id],
                template="reminder", category="reminder", channels=channels,
                per_client_context={s.client_id: _context(s) for s in batch if s.client_id},
                created_by=f"reminders:{facts.slug}")
            for step, comm in zip(batch, queued, strict=True):
                status = {"queued": StepStatus.queued, "deferred": StepStatus.deferred}.get(
                    comm.status, StepStatus.suppressed)
                veto = next((r for r in comm.verdict_reasons if r.get("decision") == "veto"), None)
                reason = (veto["code"], veto["message"]) \
                    if status == StepStatus.suppressed and veto else None
                updates.append(_outcome(step, status, reason=reason, communication_id=comm.id,
                                        channel=comm.channel))
    if updates:
        # the rows were written by claim() above: one UPDATE by their unique key, no reload
        await session.execute(
            update(_STEPS).where(_STEPS.c.reminder_id == bindparam("k_reminder"),
                                 _STEPS.c.step == bindparam("k_step")),
            updates)
        for u in updates:
            report.count(u["status"])


def _outcome(step: DueStep, status: StepStatus, *, reason: tuple[str, str] | None,
             communication_id: int | None = None, channel: str | None = None) -> dict[str, Any]:
    return {"k_reminder": step.reminder_id, "k_step": step.step, "status": status.value,
            "reason_code": reason[0] if reason else None, "reason": reason[1] if reason else None,
            "communication_id": communication_id, "channel": channel}


def _context(step: DueStep) -> dict[str, Any]:
    return {"patient_name": step.patient_name or "your pet",
            "service": step.service or "a check-up",
            "due_date": step.due_date.isoformat(),
            "reminder_id": step.reminder_id, "reminder_step": step.step}


async def run_practice(hub: Any, practice: Practice, report: RunReport) -> None:
    facts = practice_facts(hub, practice)
    now = hub.clock.now()
    if not in_sending_hours(facts, now):
        return
    report.practices += 1
    today = local_now(facts, now).date()
    async with hub.sessionmaker() as session:
        steps = await due_steps(hub, session, facts, today)
    for i in range(0, len(steps), CHUNK):
        async with hub.transaction() as session:
            await send_chunk(session, hub, facts, steps[i:i + CHUNK], report)


async def run_reminders(hub: Any, practice_slug: str | None = None, *,
                        surveys: bool = False) -> RunReport:
    """One run over every practice (or one): see the module docstring. With ``surveys``, the
    same run then sends the surveys due after visits (:mod:`hub.clients.surveys`)."""
    from hub.clients.surveys import send_surveys

    report = RunReport()
    async with hub.sessionmaker() as session:
        stmt = select(Practice).order_by(Practice.id)
        if practice_slug is not None:
            stmt = stmt.where(Practice.slug == practice_slug)
        practices = list((await session.execute(stmt)).scalars())
    for practice in practices:
        await run_practice(hub, practice, report)
        if surveys and in_sending_hours(practice_facts(hub, practice), hub.clock.now()):
            report.surveys += await send_surveys(hub, practice)
    if report.written:
        log.info("reminders: %s steps written (%s)", report.written, report.by_status)
    return report
