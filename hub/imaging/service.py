"""Storing received instances, filing them into studies, and deciding when a study is stable.

Inbound transports (the DICOM receiver) file instances with :func:`file_received` (or
:func:`store_instances` in a session of their own) only once their files are durable, and
acknowledge the sender only after that transaction commits. A study becomes stable
``stable_age`` seconds after its last instance: the check is a durable job
(``imaging.study_stability``), armed when a study starts receiving and re-armed by the job
itself while instances keep arriving, so a restart loses nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from hub.db.transactions import run_transaction
from hub.imaging.filing import (
    STABILITY_JOB,
    ImagingError,
    StoreOutcome,
    file_instances,
    stability_check,
)
from hub.imaging.header_fields import HEADER_FIELDS, check_declared
from hub.imaging.models import STABLE, Study
from hub.imaging.routing import StudyFacts

if TYPE_CHECKING:
    from hub.core import Hub
    from hub.jobs import JobContext

__all__ = [
    "HEADER_FIELDS",
    "STABILITY_JOB",
    "ImagingError",
    "ReceivedInstance",
    "StoreOutcome",
    "file_received",
    "store_instances",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReceivedInstance:
    """What an inbound transport hands over to be filed; its row commits only once the
    instance's file is durable."""

    practice_id: int
    calling_ae: str
    peer_address: str | None
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    size_bytes: int
    path: str
    modality: str | None = None
    animal_name: str | None = None
    animal_id: str | None = None
    species: str | None = None
    responsible_person: str | None = None
    body_part: str | None = None
    study_date: str | None = None
    study_description: str | None = None
    institution: str | None = None


# The header fields come last, in the declared order (the relay sends them in order).
check_declared("ReceivedInstance", [f.name for f in fields(ReceivedInstance)][-len(HEADER_FIELDS):])


def study_facts(study: Study) -> StudyFacts:
    return StudyFacts(
        id=study.id,
        practice_id=study.practice_id,
        study_instance_uid=study.study_instance_uid,
        modality=study.modality,
        modalities=tuple(study.modalities or ()),
        instance_count=study.instance_count,
        status=study.status,
    )


async def _arm_stability(
    session: AsyncSession, hub: Hub, study: Study, due: datetime, stable_age: float
) -> None:
    study.stable_check_at = due
    payload, key = stability_check(study.id, stable_age, due)
    await hub.jobs.enqueue(session, STABILITY_JOB, payload, run_at=due, idempotency_key=key)


async def store_instances(
    session: AsyncSession,
    hub: Hub,
    items: list[ReceivedInstance],
    *,
    stable_age: float,
    overwrite: bool = False,
    study_ids: dict[tuple[int, str], int] | None = None,
) -> list[StoreOutcome]:
    """File received instances in the session's transaction (flushes, never commits).

    See :func:`hub.imaging.filing.file_instances`; :func:`file_received` is the faster path
    for a transport that files in its own transactions.
    """
    await session.flush()
    now = hub.clock.now()
    filed = await session.run_sync(
        lambda sync: file_instances(
            sync.connection(), hub, items, now=now, stable_age=stable_age,
            overwrite=overwrite, study_ids=study_ids,
        )
    )
    if filed.armed:
        hub.jobs.wake_after_commit(session)
    return filed.outcomes


async def file_received(
    hub: Hub,
    items: list[ReceivedInstance],
    *,
    stable_age: float,
    overwrite: bool = False,
    study_ids: dict[tuple[int, str], int] | None = None,
) -> list[StoreOutcome]:
    """File received instances in a transaction of their own, and commit it (in one hand-off
    to the database thread on SQLite; see :func:`hub.db.transactions.run_transaction`)."""
    now = hub.clock.now()
    filed = await run_transaction(
        hub.engine,
        lambda conn: file_instances(
            conn, hub, items, now=now, stable_age=stable_age, overwrite=overwrite,
            study_ids=study_ids,
        ),
    )
    if filed.armed:
        hub.jobs.wake()
    return filed.outcomes


async def check_study_stability(hub: Hub, job: JobContext) -> None:
    """Job handler: mark the study stable if no instance came for ``stable_age``, else re-arm.

    Marking it stable, auto-submitting it (when its account asks for that) and the re-arm
    happen in one transaction; ``vethub_study_stable`` fires after the commit.
    """
    from hub.imaging.cases import auto_submit

    study_id = int(job.payload["study_id"])
    stable_age = float(job.payload.get("stable_age", 60))
    async with hub.transaction() as session:
        study = await session.get(Study, study_id, with_for_update=not hub.is_sqlite)
        if study is None or study.status == STABLE:
            return
        due = study.last_received_at + timedelta(seconds=stable_age)
        now = hub.clock.now()
        if due > now:
            await _arm_stability(session, hub, study, due, stable_age)
            return
        study.status = STABLE
        study.stable_at = now
        study.stable_check_at = None
        await session.flush()
        facts = study_facts(study)
        await auto_submit(session, hub, study)
    await hub.fire("vethub_study_stable", hub=hub, study=facts)
