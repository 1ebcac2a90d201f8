"""The database side of forwarding a case: what to send, and recording what the peer said.

The outbound transport (plugins/dicom/forwarder.py) speaks DICOM; everything it learns is
written here, so the plugin never touches the imaging tables itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db.models import Company
from hub.imaging.cases import add_status
from hub.imaging.models import (
    CASE_DELIVERED,
    CASE_FAILED,
    CASE_FORWARDING,
    FWD_PENDING,
    FWD_SUCCESS,
    FWD_WARNING,
    Case,
    CaseInstanceForward,
    Instance,
)

if TYPE_CHECKING:
    from hub.core import Hub

ACCEPTED = (FWD_SUCCESS, FWD_WARNING)


class ForwardRefused(Exception):
    """The case cannot be forwarded at all (no such case, no destination): retrying won't help."""


@dataclass(frozen=True, slots=True)
class Destination:
    host: str
    port: int
    ae_title: str

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ForwardItem:
    instance_id: int
    path: str  # relative to the storage root
    sop_class_uid: str
    transfer_syntax_uid: str


@dataclass
class ForwardPlan:
    destination: Destination
    items: list[ForwardItem] = field(default_factory=list)


def destination_of(company: Company) -> Destination:
    """The company's DICOM peer from ``settings["dicom_destination"]``."""
    raw = (company.settings or {}).get("dicom_destination")
    if not isinstance(raw, dict):
        raise ForwardRefused(f"company {company.slug} has no dicom_destination in its settings")
    try:
        dest = Destination(str(raw["host"]), int(raw["port"]), str(raw["ae_title"]).strip())
    except (KeyError, TypeError, ValueError) as err:
        raise ForwardRefused(f"company {company.slug}: dicom_destination needs host, port and ae_title ({err})") from err
    if not dest.ae_title or len(dest.ae_title) > 16 or not 0 < dest.port < 65536:
        raise ForwardRefused(f"company {company.slug}: invalid dicom_destination {raw!r}")
    return dest


async def plan_forward(session: AsyncSession, hub: Hub, case_id: int) -> ForwardPlan | None:
    """Mark the case forwarding and list the instances its peer has not accepted yet.

    Returns None for a case already delivered.
    Raises ForwardRefused after recording the case as failed (the caller commits, then gives up).
    """
    case = await session.get(Case, case_id)
    if case is None:
        raise ForwardRefused(f"case {case_id} does not exist")
    if case.status == CASE_DELIVERED:  # a replayed job after delivery: nothing to do
        return None
    company = await session.get(Company, case.company_id) if case.company_id else None
    if company is None:
        raise ForwardRefused(f"case {case_id} is not routed to a company")
    try:
        dest = destination_of(company)
    except ForwardRefused as err:
        await add_status(session, hub, case, CASE_FAILED, note=str(err))
        raise
    instances = (await session.execute(
        select(Instance).where(Instance.study_id == case.study_id).order_by(Instance.id)
    )).scalars().all()
    rows = await _forward_rows(session, case.id)
    now = hub.clock.now()
    for inst in instances:
        if inst.id not in rows:
            rows[inst.id] = CaseInstanceForward(case_id=case.id, instance_id=inst.id, status=FWD_PENDING,
                                                attempts=0, updated_at=now)
            session.add(rows[inst.id])
    if case.status != CASE_FORWARDING:
        await add_status(session, hub, case, CASE_FORWARDING, note=f"to {dest}")
    items = [ForwardItem(i.id, i.path, i.sop_class_uid, i.transfer_syntax_uid)
             for i in instances if rows[i.id].status not in ACCEPTED]
    return ForwardPlan(dest, items)


async def record_forward(
    session: AsyncSession, hub: Hub, case_id: int, destination: Destination,
    statuses: dict[int, tuple[int | None, str | None]], category: Callable[[int | None], str], *,
    association_error: str | None, attempt: int, max_attempts: int,
) -> str | None:
    """Record each instance's answer; deliver the case when all were accepted.

    :returns: None when delivered, else why not (the caller retries, or at the last attempt
        the case has been marked failed).
    """
    case = await session.get(Case, case_id)
    if case is None:
        raise ForwardRefused(f"case {case_id} does not exist")
    rows = await _forward_rows(session, case.id)
    now = hub.clock.now()
    for instance_id, (code, comment) in statuses.items():
        row = rows[instance_id]
        row.status, row.status_code, row.comment = category(code), code, comment
        row.attempts += 1
        row.updated_at = now
    pending = [r for r in rows.values() if r.status not in ACCEPTED]
    summary = _summary(rows.values())
    if not pending:
        case.delivered_at = now
        await add_status(session, hub, case, CASE_DELIVERED, note=f"to {destination}: {summary}")
        return None
    why = association_error or f"{len(pending)} instance(s) not accepted ({summary})"
    last = attempt >= max_attempts
    await add_status(session, hub, case, CASE_FAILED if last else CASE_FORWARDING,
                     note=f"attempt {attempt} of {max_attempts}: {why}")
    return why


async def case_dead(session: AsyncSession, hub: Hub, job: Any, reason: str) -> None:
    """``on_dead`` of the forward job: a case not yet delivered ends ``failed`` with the reason
    (a job abandoned by crashed workers never reached :func:`record_forward`'s last attempt)."""
    case = await session.get(Case, int(job.payload["case_id"]))
    if case is None or case.status in (CASE_DELIVERED, CASE_FAILED):
        return
    await add_status(session, hub, case, CASE_FAILED, note=f"forward job {job.id} is dead: {reason}")


async def _forward_rows(session: AsyncSession, case_id: int) -> dict[int, CaseInstanceForward]:
    result = await session.execute(select(CaseInstanceForward).where(CaseInstanceForward.case_id == case_id))
    return {r.instance_id: r for r in result.scalars()}


def _summary(rows: Iterable[Any]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
