"""The database side of forwarding a case: what to send, and recording what the peer said.

The outbound transport (plugins/dicom/forwarder.py) speaks DICOM; everything it learns is
written here, so the plugin never touches the imaging tables itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db.models import Company, Practice
from hub.imaging.case_status import change_status
from hub.imaging.delivery import mark_delivered
from hub.imaging.models import (
    FWD_PENDING,
    FWD_SUCCESS,
    FWD_WARNING,
    Case,
    CaseAttachment,
    CaseInstanceForward,
    CaseStatus,
    Instance,
    Study,
)

if TYPE_CHECKING:
    from hub.core import Hub

ACCEPTED = (FWD_SUCCESS, FWD_WARNING)
FORWARDER = "dicom forwarder"


class ForwardRefused(Exception):
    """The case cannot be forwarded at all (no such case, no destination): retrying won't help."""


@dataclass(frozen=True, slots=True)
class Destination:
    """The DICOM node a company's cases are sent to (C-STORE)."""
    host: str
    port: int
    ae_title: str

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ForwardItem:
    """One stored instance waiting to be sent, with what the association must offer for it."""
    instance_id: int
    path: str  # relative to the storage root
    sop_class_uid: str
    transfer_syntax_uid: str


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the practice asked, for the object that carries it to the company's PACS."""

    case_id: int
    study_instance_uid: str
    practice_name: str
    patient_name: str | None
    patient_id: str | None
    species: str | None
    owner: str | None
    study_date: str | None
    urgency: str
    clinical_history: str
    question: str
    submitted_by: str
    submitted_at: datetime
    attachments: tuple[tuple[str, str, bytes], ...]  # (filename, content type, content)


@dataclass
class ForwardPlan:
    """What to send. Items with a negative ``instance_id`` are the request objects an outbound
    transport adds (they have no instance row); their answers count for delivery too."""

    destination: Destination
    items: list[ForwardItem] = field(default_factory=list)
    case_id: int = 0
    request: RequestFacts | None = None


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
    """List the instances of the case its peer has not accepted yet.

    Returns None for a case delivered, reported or cancelled meanwhile (a replayed job, or a
    practice that withdrew its case before the forward ran). A failed case replayed by an
    operator is routed again.
    Raises ForwardRefused after recording the case as failed (the caller commits, then gives up).
    """
    case = await session.get(Case, case_id)
    if case is None:
        raise ForwardRefused(f"case {case_id} does not exist")
    if case.status in (CaseStatus.DELIVERED, CaseStatus.REPORTED, CaseStatus.CANCELLED):
        return None
    if case.status == CaseStatus.FAILED:
        await change_status(session, hub, case, CaseStatus.ROUTED, actor=FORWARDER,
                            note="forward replayed")
    company = await session.get(Company, case.company_id) if case.company_id else None
    if company is None:
        raise ForwardRefused(f"case {case_id} is not routed to a company")
    try:
        dest = destination_of(company)
    except ForwardRefused as err:
        await change_status(session, hub, case, CaseStatus.FAILED, actor=FORWARDER, note=str(err))
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
    # Instances never tried go before those that failed, so one the peer cannot take does not
    # hold back the rest attempt after attempt.
    waiting = [i for i in instances if rows[i.id].status not in ACCEPTED]
    waiting.sort(key=lambda i: (rows[i.id].attempts > 0, i.id))
    items = [ForwardItem(i.id, i.path, i.sop_class_uid, i.transfer_syntax_uid) for i in waiting]
    return ForwardPlan(dest, items, case.id, await request_facts(session, case))


async def request_facts(session: AsyncSession, case: Case) -> RequestFacts:
    study = await session.get(Study, case.study_id)
    practice = await session.get(Practice, case.practice_id)
    assert study is not None
    attachments = (await session.execute(
        select(CaseAttachment).where(CaseAttachment.case_id == case.id).order_by(CaseAttachment.id))).scalars()
    patient = case.patient or {}
    return RequestFacts(
        case_id=case.id, study_instance_uid=study.study_instance_uid,
        practice_name=practice.name if practice else "",
        patient_name=patient.get("name") or study.animal_name,
        patient_id=patient.get("dicom_patient_id") or patient.get("patient_id") or study.animal_id,
        species=patient.get("species") or study.species, owner=patient.get("owner"),
        study_date=study.study_date, urgency=case.urgency,
        clinical_history=case.clinical_history, question=case.question,
        submitted_by=case.submitted_by, submitted_at=case.created_at,
        attachments=tuple((a.filename, a.content_type, a.content) for a in attachments),
    )


async def record_instance(
    session: AsyncSession, hub: Hub, case_id: int, instance_id: int, code: int | None,
    comment: str | None, category: Callable[[int | None], str],
) -> None:
    """Record the peer's answer for one instance as it arrives, while the attempt goes on."""
    row = (await session.execute(select(CaseInstanceForward).where(
        CaseInstanceForward.case_id == case_id, CaseInstanceForward.instance_id == instance_id,
    ))).scalar_one()
    row.status, row.status_code, row.comment = category(code), code, comment
    row.attempts += 1
    row.updated_at = hub.clock.now()


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
    if case.status != CaseStatus.ROUTED:  # cancelled or reported while the images travelled
        return None
    rows = await _forward_rows(session, case.id)
    now = hub.clock.now()
    refused_requests = []
    for instance_id, (code, comment) in statuses.items():
        if instance_id < 0:  # a request object: no row, but it must arrive too
            if category(code) not in ACCEPTED:
                refused_requests.append(f"request object: {comment or hex(code or 0)}")
            continue
        row = rows[instance_id]
        row.status, row.status_code, row.comment = category(code), code, comment
        row.attempts += 1
        row.updated_at = now
    pending = [r for r in rows.values() if r.status not in ACCEPTED] + refused_requests
    summary = _summary(rows.values())
    if not pending:
        await mark_delivered(session, hub, case, note=f"to {destination}: {summary}", actor=FORWARDER)
        return None
    why = association_error or f"{len(pending)} instance(s) not accepted ({summary})"
    if attempt >= max_attempts:
        await change_status(session, hub, case, CaseStatus.FAILED, actor=FORWARDER,
                            note=f"attempt {attempt} of {max_attempts}: {why}")
    return why


async def case_dead(session: AsyncSession, hub: Hub, job: Any, reason: str) -> None:
    """``on_dead`` of the forward job: a case still being forwarded (``routed``) ends
    ``failed`` with the reason (a job abandoned by crashed workers never reached
    :func:`record_forward`'s last attempt)."""
    case = await session.get(Case, int(job.payload["case_id"]))
    if case is None or case.status != CaseStatus.ROUTED:
        return
    await change_status(session, hub, case, CaseStatus.FAILED, actor="jobs",
                        note=f"forward job {job.id} is dead: {reason}")


async def _forward_rows(session: AsyncSession, case_id: int) -> dict[int, CaseInstanceForward]:
    result = await session.execute(select(CaseInstanceForward).where(CaseInstanceForward.case_id == case_id))
    return {r.instance_id: r for r in result.scalars()}


def _summary(rows: Iterable[Any]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
