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

from sqlalchemy import case, insert, literal, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db.types import UTCDateTime
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
    study_ids: dict[tuple[int, str], int] | None = None,
) -> list[StoreOutcome]:
    """File received instances (flushes, never commits) in as few statements as possible.

    This is the receiver's hot path, so it avoids the ORM's unit of work. For new instances of
    a known study it is two statements: a multi-row ``INSERT … ON CONFLICT DO NOTHING
    RETURNING`` and one ``UPDATE … RETURNING`` per study (which also re-opens a stable study
    and arms its stability check when none is armed). ``study_ids`` is a caller-owned cache of
    (practice id, Study Instance UID) -> study id (ids never change).

    A SOP Instance UID already stored makes no new row: its ``received_count`` goes up and,
    with ``overwrite``, its header fields are replaced by the new ones. A UID already stored
    for another practice is refused (:class:`ImagingError`, which fails the whole batch; the
    caller retries the instances one by one).
    """
    await session.flush()
    now = hub.clock.now()
    it, st = Instance.__table__, Study.__table__
    cache = study_ids if study_ids is not None else {}
    dialect_insert = pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert

    # Studies: from the cache, else looked up, else created.
    keys = {(item.practice_id, item.study_instance_uid) for item in items} - set(cache)
    if keys:
        for row in await session.execute(
            select(st.c.id, st.c.practice_id, st.c.study_instance_uid).where(
                st.c.practice_id.in_({k[0] for k in keys}),
                st.c.study_instance_uid.in_({k[1] for k in keys}),
            )
        ):
            if (row.practice_id, row.study_instance_uid) in keys:
                cache[(row.practice_id, row.study_instance_uid)] = row.id
        for item in items:
            key = (item.practice_id, item.study_instance_uid)
            if key in cache:
                continue
            values = dict(
                practice_id=item.practice_id, study_instance_uid=item.study_instance_uid,
                calling_ae=item.calling_ae, modalities=[], instance_count=0, size_bytes=0,
                status=RECEIVING, first_received_at=now, last_received_at=now,
                **{f: getattr(item, f) for f in HEADER_FIELDS},
            )
            cache[key] = (
                await session.execute(insert(st).values(**values).returning(st.c.id))
            ).scalar_one()

    # New instances in one statement; the UIDs it did not insert are already stored.
    by_uid: dict[str, list[ReceivedInstance]] = {}
    for item in items:
        by_uid.setdefault(item.sop_instance_uid, []).append(item)
    rows = [
        dict(
            study_id=cache[(same[0].practice_id, same[0].study_instance_uid)],
            received_count=1, received_at=now, updated_at=now,
            **{f.name: getattr(same[0], f.name) for f in fields(same[0])},
        )
        for same in by_uid.values()
    ]
    inserted = {
        row.sop_instance_uid: row.id
        for row in await session.execute(
            dialect_insert(it)
            .on_conflict_do_nothing(index_elements=["sop_instance_uid"])
            .returning(it.c.id, it.c.sop_instance_uid),
            rows,
        )
    }
    ids = dict(inserted)
    size_adjust: dict[int, int] = {}
    stored_before = {
        row.sop_instance_uid: row
        for row in (
            await session.execute(
                select(it.c.id, it.c.sop_instance_uid, it.c.practice_id, it.c.size_bytes).where(
                    it.c.sop_instance_uid.in_(set(by_uid) - set(inserted))
                )
            )
            if len(inserted) < len(by_uid)
            else []
        )
    }
    for uid, same in by_uid.items():
        resent = same[1:] if uid in inserted else same
        if not resent:
            continue
        if uid in stored_before:
            old = stored_before[uid]
            if old.practice_id != same[0].practice_id:
                raise ImagingError("this SOP Instance UID is already stored for another practice")
            ids[uid], old_size = old.id, old.size_bytes
        else:
            old_size = same[0].size_bytes
        values: dict = {"received_count": it.c.received_count + len(resent), "updated_at": now}
        if overwrite:
            last = resent[-1]
            values.update(
                {f.name: getattr(last, f.name) for f in fields(last) if f.name != "practice_id"}
            )
            study_id = cache[(last.practice_id, last.study_instance_uid)]
            size_adjust[study_id] = size_adjust.get(study_id, 0) + last.size_bytes - old_size
        await session.execute(update(it).where(it.c.id == ids[uid]).values(**values))

    # Per study: counts, sizes, last arrival, re-open, arm the stability check.
    outcomes: list[StoreOutcome] = []
    per_study: dict[int, dict] = {}
    for uid, same in by_uid.items():
        study_id = cache[(same[0].practice_id, same[0].study_instance_uid)]
        delta = per_study.setdefault(study_id, {"count": 0, "size": 0, "modalities": []})
        if uid in inserted:
            delta["count"] += 1
            delta["size"] += same[0].size_bytes
            if same[0].modality and same[0].modality not in delta["modalities"]:
                delta["modalities"].append(same[0].modality)
    for item in items:
        study_id = cache[(item.practice_id, item.study_instance_uid)]
        created = item.sop_instance_uid in inserted and item is by_uid[item.sop_instance_uid][0]
        outcomes.append(StoreOutcome(ids[item.sop_instance_uid], study_id, created))
    due = now + timedelta(seconds=stable_age)
    for study_id, delta in per_study.items():
        values = {
            "instance_count": st.c.instance_count + delta["count"],
            "size_bytes": st.c.size_bytes + delta["size"] + size_adjust.get(study_id, 0),
            "last_received_at": now,
        }
        if delta["count"]:  # new instances re-open a stable study and arm a missing check
            values.update(
                status=RECEIVING,
                stable_at=None,
                stable_check_at=case(
                    (st.c.stable_check_at.is_(None), literal(due, UTCDateTime())),
                    else_=st.c.stable_check_at,
                ),
            )
        row = (
            await session.execute(
                update(st)
                .where(st.c.id == study_id)
                .values(**values)
                .returning(st.c.stable_check_at, st.c.modalities)
            )
        ).one()
        if delta["count"] and row.stable_check_at == due:  # this statement armed it
            await hub.jobs.enqueue(
                session, STABILITY_JOB, {"study_id": study_id, "stable_age": stable_age},
                run_at=due, idempotency_key=f"{STABILITY_JOB}:{study_id}:{due.isoformat()}",
            )
        missing = [m for m in delta["modalities"] if m not in (row.modalities or [])]
        if missing:
            await session.execute(
                update(st).where(st.c.id == study_id)
                .values(modalities=[*(row.modalities or []), *missing])
            )
    return outcomes


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
