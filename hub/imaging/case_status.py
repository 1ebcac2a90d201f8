"""A case's status: the moves allowed, the history row each move writes, and its event.

Every change goes through :func:`change_status`: it checks the move, records who made it and
when in ``case_status_history``, and writes a job (same transaction) that fires
``vethub_case_status`` once the change has committed — so a listener never hears of a change
that rolled back, and a crash between commit and notification loses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from hub.errors import Conflict
from hub.imaging.models import Case, CaseStatus, CaseStatusChange

if TYPE_CHECKING:
    from hub.core import Hub
    from hub.jobs import JobContext

S = CaseStatus
CASE_STATUS_JOB = "imaging.case_status"

# Where each status may go next. A failed case may be routed again (an operator replays its
# forward); a report may arrive before the forward's last answer was recorded.
ALLOWED: dict[CaseStatus | None, frozenset[CaseStatus]] = {
    None: frozenset({S.SUBMITTED}),
    S.SUBMITTED: frozenset({S.ROUTED, S.FAILED, S.CANCELLED}),
    S.ROUTED: frozenset({S.DELIVERED, S.REPORTED, S.FAILED, S.CANCELLED}),
    S.DELIVERED: frozenset({S.REPORTED}),
    S.FAILED: frozenset({S.ROUTED, S.DELIVERED}),
    S.REPORTED: frozenset(),
    S.CANCELLED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class CaseStatusEvent:
    """What ``vethub_case_status`` receives: one committed status change of one case."""

    case_id: int
    practice_id: int
    company_id: int | None
    study_id: int
    status: CaseStatus
    previous: CaseStatus | None
    actor: str
    at: datetime
    note: str | None


def can_move(current: str | None, to: CaseStatus) -> bool:
    return to in ALLOWED[CaseStatus(current) if current else None]


async def change_status(
    session: AsyncSession, hub: Hub, case: Case, status: CaseStatus, *, actor: str,
    note: str | None = None, data: dict[str, Any] | None = None, first: bool = False,
) -> CaseStatusChange:
    """Move ``case`` to ``status`` (flushes); 409 ``invalid_transition`` for a move the
    lifecycle does not allow. ``first`` marks the case's creation (no previous status)."""
    previous = None if first else case.status
    if not can_move(previous, status):
        raise Conflict(f"a {previous} case cannot become {status}", code="invalid_transition",
                       field="status")
    now = hub.clock.now()
    case.status = status
    case.updated_at = now
    if status == S.FAILED:
        case.failure_reason = note
    change = CaseStatusChange(case_id=case.id, at=now, status=status, actor=actor, note=note,
                              data={**(data or {}), "previous": previous})
    session.add(change)
    await session.flush()
    await hub.jobs.enqueue(session, CASE_STATUS_JOB, {"change_id": change.id},
                           idempotency_key=f"{CASE_STATUS_JOB}:{change.id}")
    return change


async def announce_job(hub: Hub, job: JobContext) -> None:
    """Job handler: fire ``vethub_case_status`` for one committed change."""
    async with hub.sessionmaker() as session:
        change = await session.get(CaseStatusChange, int(job.payload["change_id"]))
        case = await session.get(Case, change.case_id) if change is not None else None
    if change is None or case is None:
        return
    previous = (change.data or {}).get("previous")
    event = CaseStatusEvent(
        case_id=case.id, practice_id=case.practice_id, company_id=case.company_id,
        study_id=case.study_id, status=CaseStatus(change.status),
        previous=CaseStatus(previous) if previous else None, actor=change.actor or "",
        at=change.at, note=change.note,
    )
    await hub.fire("vethub_case_status", hub=hub, change=event)
