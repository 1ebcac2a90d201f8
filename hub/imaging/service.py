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

from sqlalchemy import insert, select, update
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
    """File received instances (flushes, never commits) with a few Core statements per batch.

    This is the receiver's hot path, so it avoids the ORM's unit of work: one select of the
    instances already stored, one of the studies, one multi-row insert, one update per study.
    A SOP Instance UID already stored makes no new row: its ``received_count`` goes up and,
    with ``overwrite``, its header fields are replaced by the new ones. A UID already stored
    for another practice is refused (:class:`ImagingError`, which fails the whole batch; the
    caller retries the instances one by one).
    """
    await session.flush()
    now = hub.clock.now()
    it, st = Instance.__table__, Study.__table__
    uids = {item.sop_instance_uid for item in items}
    existing = {
        row.sop_instance_uid: row
        for row in await session.execute(
            select(it.c.id, it.c.sop_instance_uid, it.c.practice_id, it.c.study_id,
                   it.c.size_bytes).where(it.c.sop_instance_uid.in_(uids))
        )
    }
    for item in items:
        row = existing.get(item.sop_instance_uid)
        if row is not None and row.practice_id != item.practice_id:
            raise ImagingError("this SOP Instance UID is already stored for another practice")

    keys = {(item.practice_id, item.study_instance_uid) for item in items}
    studies: dict[tuple[int, str], dict] = {
        (row.practice_id, row.study_instance_uid): dict(row._mapping)
        for row in await session.execute(
            select(st.c.id, st.c.practice_id, st.c.study_instance_uid, st.c.status,
                   st.c.stable_check_at, st.c.modalities).where(
                st.c.practice_id.in_({k[0] for k in keys}),
                st.c.study_instance_uid.in_({k[1] for k in keys}),
            )
        )
        if (row.practice_id, row.study_instance_uid) in keys
    }
    for item in items:
        key = (item.practice_id, item.study_instance_uid)
        if key in studies:
            continue
        values = dict(
            practice_id=item.practice_id, study_instance_uid=item.study_instance_uid,
            calling_ae=item.calling_ae, modalities=[], instance_count=0, size_bytes=0,
            status=RECEIVING, first_received_at=now, last_received_at=now,
            **{f: getattr(item, f) for f in HEADER_FIELDS},
        )
        study_id = (await session.execute(insert(st).values(**values).returning(st.c.id))).scalar_one()
        studies[key] = {"id": study_id, "status": RECEIVING, "stable_check_at": None,
                        "modalities": [], **values}

    new_rows: list[dict] = []
    new_index: dict[str, int] = {}
    outcome_refs: list[tuple[str, int, bool]] = []  # (sop uid, study id, created)
    deltas: dict[int, dict] = {}
    for item in items:
        study = studies[(item.practice_id, item.study_instance_uid)]
        delta = deltas.setdefault(study["id"], {"count": 0, "size": 0, "study": study,
                                                "reopen": False})
        if item.sop_instance_uid in existing or item.sop_instance_uid in new_index:
            if item.sop_instance_uid in new_index:  # sent twice within this batch
                row = new_rows[new_index[item.sop_instance_uid]]
                row["received_count"] += 1
                if overwrite:
                    delta["size"] += item.size_bytes - row["size_bytes"]
                    row.update({f.name: getattr(item, f.name) for f in fields(item)})
            else:
                old = existing[item.sop_instance_uid]
                values = {"received_count": it.c.received_count + 1, "updated_at": now}
                if overwrite:
                    delta["size"] += item.size_bytes - old.size_bytes
                    values.update({f.name: getattr(item, f.name) for f in fields(item)
                                   if f.name != "practice_id"})
                await session.execute(update(it).where(it.c.id == old.id).values(**values))
            outcome_refs.append((item.sop_instance_uid, study["id"], False))
            continue
        new_index[item.sop_instance_uid] = len(new_rows)
        new_rows.append(dict(
            study_id=study["id"], received_count=1, received_at=now, updated_at=now,
            **{f.name: getattr(item, f.name) for f in fields(item)},
        ))
        delta["count"] += 1
        delta["size"] += item.size_bytes
        if item.modality and item.modality not in study["modalities"]:
            study["modalities"] = [*study["modalities"], item.modality]
            delta["modalities"] = study["modalities"]
        if study["status"] == STABLE:
            delta["reopen"] = True
        outcome_refs.append((item.sop_instance_uid, study["id"], True))

    ids = {row.sop_instance_uid: row.id for row in existing.values()}
    if new_rows:
        result = await session.execute(
            insert(it).returning(it.c.id, it.c.sop_instance_uid, sort_by_parameter_order=True),
            new_rows,
        )
        ids.update({row.sop_instance_uid: row.id for row in result})

    for study_id, delta in deltas.items():
        study = delta["study"]
        values: dict = {
            "instance_count": st.c.instance_count + delta["count"],
            "size_bytes": st.c.size_bytes + delta["size"],
            "last_received_at": now,
        }
        if "modalities" in delta:
            values["modalities"] = delta["modalities"]
        status = study["status"]
        if delta["reopen"]:
            values.update(status=RECEIVING, stable_at=None)
            status = RECEIVING
        if study["stable_check_at"] is None and status == RECEIVING:
            due = now + timedelta(seconds=stable_age)
            values["stable_check_at"] = due
            await hub.jobs.enqueue(
                session, STABILITY_JOB, {"study_id": study_id, "stable_age": stable_age},
                run_at=due, idempotency_key=f"{STABILITY_JOB}:{study_id}:{due.isoformat()}",
            )
        await session.execute(update(st).where(st.c.id == study_id).values(**values))
    return [StoreOutcome(ids[uid], study_id, created) for uid, study_id, created in outcome_refs]


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
