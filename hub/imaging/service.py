"""Storing received instances, filing them into studies, and deciding when a study is stable.

Inbound transports (the DICOM receiver) write the file durably first, then call
:func:`store_instance` in a transaction; the transport acknowledges the sender only after that
transaction commits. A study becomes stable ``stable_age`` seconds after its last instance:
the check is a durable job (``imaging.study_stability``), armed when a study starts receiving
and re-armed by the job itself while instances keep arriving, so a restart loses nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.imaging.models import RECEIVING, STABLE, Instance, Study
from hub.imaging.routing import StudyFacts

if TYPE_CHECKING:
    from hub.core import Hub
    from hub.jobs import JobContext

log = logging.getLogger(__name__)

STABILITY_JOB = "imaging.study_stability"


class ImagingError(Exception):
    """An instance cannot be filed; ``status`` is the DICOM status a transport should answer."""

    def __init__(self, message: str, status: int = 0xA900) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class ReceivedInstance:
    """What an inbound transport hands over once the file is durably stored."""

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


HEADER_FIELDS = (
    "modality",
    "animal_name",
    "animal_id",
    "species",
    "responsible_person",
    "body_part",
    "study_date",
    "study_description",
    "institution",
)


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    instance_id: int
    study_id: int
    created: bool  # False for a re-sent SOP Instance UID


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
    await hub.jobs.enqueue(
        session,
        STABILITY_JOB,
        {"study_id": study.id, "stable_age": stable_age},
        run_at=due,
        idempotency_key=f"{STABILITY_JOB}:{study.id}:{due.isoformat()}",
    )


async def store_instance(
    session: AsyncSession,
    hub: Hub,
    item: ReceivedInstance,
    *,
    stable_age: float,
    overwrite: bool = False,
) -> StoreOutcome:
    """File one received instance (flushes, never commits); see :func:`store_instances`."""
    (outcome,) = await store_instances(
        session, hub, [item], stable_age=stable_age, overwrite=overwrite
    )
    return outcome


async def store_instances(
    session: AsyncSession,
    hub: Hub,
    items: list[ReceivedInstance],
    *,
    stable_age: float,
    overwrite: bool = False,
) -> list[StoreOutcome]:
    """File received instances (flushes, never commits), in a few round trips per batch.

    A SOP Instance UID already stored makes no new row: its ``received_count`` goes up and,
    with ``overwrite``, its header fields are replaced by the new ones. A UID already stored
    for another practice is refused (:class:`ImagingError`, which fails the whole batch; the
    caller retries the instances one by one).
    """
    now = hub.clock.now()
    uids = {item.sop_instance_uid for item in items}
    instances: dict[str, Instance] = {
        row.sop_instance_uid: row
        for row in (
            await session.execute(select(Instance).where(Instance.sop_instance_uid.in_(uids)))
        ).scalars()
    }
    for item in items:
        existing = instances.get(item.sop_instance_uid)
        if existing is not None and existing.practice_id != item.practice_id:
            raise ImagingError("this SOP Instance UID is already stored for another practice")

    keys = {(item.practice_id, item.study_instance_uid) for item in items}
    studies: dict[tuple[int, str], Study] = {
        (row.practice_id, row.study_instance_uid): row
        for row in (
            await session.execute(
                select(Study).where(
                    Study.practice_id.in_({k[0] for k in keys}),
                    Study.study_instance_uid.in_({k[1] for k in keys}),
                )
            )
        ).scalars()
        if (row.practice_id, row.study_instance_uid) in keys
    }
    new_studies = False
    for item in items:
        key = (item.practice_id, item.study_instance_uid)
        if key not in studies:
            studies[key] = Study(
                practice_id=item.practice_id,
                study_instance_uid=item.study_instance_uid,
                calling_ae=item.calling_ae,
                modalities=[],
                instance_count=0,
                size_bytes=0,
                status=RECEIVING,
                first_received_at=now,
                last_received_at=now,
                **{f: getattr(item, f) for f in HEADER_FIELDS},
            )
            session.add(studies[key])
            new_studies = True
    if new_studies:
        await session.flush()

    results: list[tuple[Instance, Study, bool]] = []
    touched: dict[int, Study] = {}
    for item in items:
        study = studies[(item.practice_id, item.study_instance_uid)]
        instance = instances.get(item.sop_instance_uid)
        if instance is None:
            instance = Instance(
                practice_id=item.practice_id,
                study_id=study.id,
                received_count=1,
                received_at=now,
                updated_at=now,
                **{f.name: getattr(item, f.name) for f in fields(item) if f.name != "practice_id"},
            )
            session.add(instance)
            instances[item.sop_instance_uid] = instance
            study.instance_count += 1
            study.size_bytes += item.size_bytes
            if item.modality and item.modality not in (study.modalities or []):
                study.modalities = [*(study.modalities or []), item.modality]
            created = True
            if study.status == STABLE:
                study.status = RECEIVING
                study.stable_at = None
        else:
            instance.received_count += 1
            instance.updated_at = now
            if overwrite:
                study.size_bytes += item.size_bytes - instance.size_bytes
                for f in fields(item):
                    if f.name != "practice_id":
                        setattr(instance, f.name, getattr(item, f.name))
            created = False
        study.last_received_at = now
        touched[study.id] = study
        results.append((instance, study, created))

    for study in touched.values():
        if study.stable_check_at is None and study.status == RECEIVING:
            await _arm_stability(
                session, hub, study, now + timedelta(seconds=stable_age), stable_age
            )
    await session.flush()
    return [StoreOutcome(inst.id, study.id, created) for inst, study, created in results]


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
