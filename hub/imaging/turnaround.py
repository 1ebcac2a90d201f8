"""Turnaround: how long a company has to report a case, the flag when it runs out, the figures.

A company sets ``turnaround_hours = { routine = 24, priority = 4, stat = 1 }`` in its config
(kept in ``settings``); the defaults below apply otherwise. A case's deadline is a row
(``cases.due_at``) and its check a job due at that moment, so a restart loses neither: when it
runs and the case is still unreported, the case is flagged (``overdue_at``, shown in the
lists) and an operator event ``case.overdue`` is recorded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub import events
from hub.db.models import Company
from hub.imaging.models import Case, CaseStatus, Study

if TYPE_CHECKING:
    from hub.core import Hub
    from hub.jobs import JobContext

DEFAULT_HOURS: dict[str, float] = {"routine": 24.0, "priority": 4.0, "stat": 1.0}
TURNAROUND_JOB = "imaging.turnaround_check"
OVERDUE_EVENT = "case.overdue"
OPEN = (CaseStatus.SUBMITTED, CaseStatus.ROUTED, CaseStatus.DELIVERED)


def hours_for(company: Company) -> dict[str, float]:
    configured = (company.settings or {}).get("turnaround_hours") or {}
    return {u: float(configured.get(u, h)) for u, h in DEFAULT_HOURS.items()}


def due_at(company: Company, urgency: str) -> timedelta:
    return timedelta(hours=hours_for(company)[str(urgency)])


async def arm(session: AsyncSession, hub: Hub, case: Case) -> None:
    """Write the check that flags ``case`` if it is still unreported at its deadline."""
    if case.due_at is None:
        return
    await hub.jobs.enqueue(session, TURNAROUND_JOB, {"case_id": case.id}, run_at=case.due_at,
                           idempotency_key=f"{TURNAROUND_JOB}:{case.id}")


async def check_job(hub: Hub, job: JobContext) -> None:
    """Job handler: flag the case if its deadline passed and it is still open."""
    async with hub.transaction() as session:
        case = await session.get(Case, int(job.payload["case_id"]))
        if case is None or case.overdue_at is not None or case.status not in OPEN:
            return
        now = hub.clock.now()
        if case.due_at is None or case.due_at > now:
            return
        case.overdue_at = now
        await events.record(
            session, OVERDUE_EVENT,
            f"case {case.id} ({case.urgency}) is past its turnaround: due "
            f"{case.due_at:%Y-%m-%d %H:%M} UTC, still {case.status}",
            practice_id=case.practice_id,
            data={"case_id": case.id, "company_id": case.company_id, "urgency": case.urgency},
        )


def is_overdue(case: Case, now: datetime) -> bool:
    return case.status in OPEN and case.due_at is not None and case.due_at <= now


# --------------------------------------------------------------------------- figures


@dataclass(frozen=True, slots=True)
class TurnaroundRow:
    """Turnaround figures for one modality and urgency in the report's period."""
    modality: str
    urgency: str
    cases: int
    reported: int
    overdue: int
    median_hours: float | None
    p90_hours: float | None


def _rank(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least ``q`` of the values at or
    below it (no interpolation, so the figure is a turnaround that really happened)."""
    if not sorted_values:
        return None
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


async def turnaround_rows(
    session: AsyncSession, *, company_id: int | None, start: datetime, end: datetime, now: datetime,
) -> list[TurnaroundRow]:
    """Cases submitted in ``[start, end)`` (of one company, or all), per modality and urgency."""
    stmt = (select(Case, Study.modality).join(Study, Study.id == Case.study_id)
            .where(Case.created_at >= start, Case.created_at < end,
                   Case.status != CaseStatus.CANCELLED))
    if company_id is not None:
        stmt = stmt.where(Case.company_id == company_id)
    groups: dict[tuple[str, str], list[tuple[Case, float | None]]] = {}
    for case, modality in (await session.execute(stmt)).all():
        hours = ((case.reported_at - case.created_at).total_seconds() / 3600
                 if case.reported_at is not None else None)
        groups.setdefault((modality or "", case.urgency), []).append((case, hours))
    rows = []
    for (modality, urgency), items in sorted(groups.items()):
        done = sorted(h for _, h in items if h is not None)
        overdue = sum(1 for c, _ in items if c.overdue_at is not None or is_overdue(c, now)
                      or (c.reported_at is not None and c.due_at is not None and c.reported_at > c.due_at))
        rows.append(TurnaroundRow(
            modality, urgency, len(items), len(done), overdue,
            None if not done else round(_rank(done, 0.5) or 0.0, 2),
            None if not done else round(_rank(done, 0.9) or 0.0, 2),
        ))
    return rows
