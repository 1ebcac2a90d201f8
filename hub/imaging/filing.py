"""Filing received instances into studies: the receiver's hot path, as synchronous Core.

:func:`file_instances` takes a :class:`~sqlalchemy.engine.Connection` in an open transaction,
so it runs inside :func:`hub.db.transactions.run_transaction` (on SQLite, in one hand-off to
the database thread) or through a session's ``run_sync``. It never commits.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, case, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from hub.db.base import table_of
from hub.db.types import UTCDateTime
from hub.imaging.header_fields import HEADER_NAMES
from hub.imaging.models import RECEIVING, Instance, Study

if TYPE_CHECKING:
    from hub.core import Hub
    from hub.imaging.service import ReceivedInstance

STABILITY_JOB = "imaging.study_stability"


def stability_check(study_id: int, stable_age: float, due: datetime) -> tuple[dict[str, Any], str]:
    """Payload and idempotency key of a study's stability check due at ``due``: arming the
    same check twice (a batch and a re-arm racing) writes one job."""
    return (
        {"study_id": study_id, "stable_age": stable_age},
        f"{STABILITY_JOB}:{study_id}:{due.isoformat()}",
    )

class ImagingError(Exception):
    """An instance cannot be filed; ``status`` is the DICOM status a transport should answer."""

    def __init__(self, message: str, status: int = 0xA900) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    """Where one received instance was filed, and whether it was new."""
    instance_id: int
    study_id: int
    created: bool  # False for a re-sent SOP Instance UID


@dataclass(frozen=True, slots=True)
class Filed:
    """The result of filing a batch of instances, and whether the workers need waking."""
    outcomes: list[StoreOutcome]
    armed: bool  # a stability check job was written: wake the workers after the commit


_IT, _ST = table_of(Instance), table_of(Study)


def _insert_new(dialect: str) -> Any:
    insert_ = pg_insert if dialect == "postgresql" else sqlite_insert
    return (
        insert_(_IT)
        .on_conflict_do_nothing(index_elements=["sop_instance_uid"])
        .returning(_IT.c.id, _IT.c.sop_instance_uid)
    )


def _bump_study(new_instances: bool) -> Any:
    """A study's counts, size and last arrival; with new instances also re-open a stable
    study and arm a missing check. No ``RETURNING``: run as one ``executemany`` for all the
    batch's studies, each an execution of SQLAlchemy's (about 0.15 ms of the commit thread's
    CPU, while it holds the GIL fifty association threads wait for); what the studies
    became is read after, in one ``SELECT``."""
    values: dict[str, Any] = {
        "instance_count": _ST.c.instance_count + bindparam("b_count"),
        "size_bytes": _ST.c.size_bytes + bindparam("b_size"),
        "last_received_at": bindparam("b_now", type_=UTCDateTime()),
    }
    if new_instances:
        values.update(
            status=RECEIVING,
            stable_at=None,
            stable_check_at=case(
                (_ST.c.stable_check_at.is_(None), bindparam("b_due", type_=UTCDateTime())),
                else_=_ST.c.stable_check_at,
            ),
        )
    return update(_ST).where(_ST.c.id == bindparam("b_id")).values(**values)


# Built once: on this path constructing a statement and its cache key cost more than
# executing it.
_INSERT_NEW = {name: _insert_new(name) for name in ("sqlite", "postgresql")}
_BUMP_GROWN, _BUMP_RESENT = _bump_study(True), _bump_study(False)
_STUDIES_AFTER = select(_ST.c.id, _ST.c.stable_check_at, _ST.c.modalities).where(
    _ST.c.id.in_(bindparam("b_ids", expanding=True))
)
_INSERT_STUDIES = insert(_ST).returning(_ST.c.id, _ST.c.practice_id, _ST.c.study_instance_uid)
_SET_MODALITIES = (
    update(_ST).where(_ST.c.id == bindparam("b_id"))
    .values(modalities=bindparam("b_modalities", type_=_ST.c.modalities.type))
)



def file_instances(
    conn: Connection,
    hub: Hub,
    items: list[ReceivedInstance],
    *,
    now: datetime,
    stable_age: float,
    overwrite: bool = False,
    study_ids: dict[tuple[int, str], int] | None = None,
) -> Filed:
    """File received instances in as few statements as possible (never commits).

    For new instances of a known study it is two statements: a multi-row ``INSERT … ON
    CONFLICT DO NOTHING RETURNING`` and one ``UPDATE … RETURNING`` per study (which also
    re-opens a stable study and arms its stability check when none is armed). ``study_ids`` is
    a caller-owned cache of (practice id, Study Instance UID) -> study id (ids never change).

    A SOP Instance UID already stored makes no new row: its ``received_count`` goes up and,
    with ``overwrite``, its header fields are replaced by the new ones. A UID already stored
    for another practice is refused (:class:`ImagingError`, which fails the whole batch; the
    caller retries the instances one by one).
    """
    cache = study_ids if study_ids is not None else {}
    _find_or_create_studies(conn, items, cache, now)
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
        for row in conn.execute(_INSERT_NEW[conn.dialect.name], rows)
    }
    ids, size_adjust = _count_resent(conn, by_uid, inserted, cache, now, overwrite)
    outcomes = []
    for item in items:
        created = item.sop_instance_uid in inserted and item is by_uid[item.sop_instance_uid][0]
        study_id = cache[(item.practice_id, item.study_instance_uid)]
        outcomes.append(StoreOutcome(ids[item.sop_instance_uid], study_id, created))
    armed = _update_studies(conn, hub, by_uid, inserted, cache, size_adjust, now, stable_age)
    return Filed(outcomes, armed)


def _find_or_create_studies(
    conn: Connection, items: list[ReceivedInstance], cache: dict[tuple[int, str], int],
    now: datetime,
) -> None:
    keys = {(item.practice_id, item.study_instance_uid) for item in items} - set(cache)
    if not keys:
        return
    for row in conn.execute(
        select(_ST.c.id, _ST.c.practice_id, _ST.c.study_instance_uid).where(
            _ST.c.practice_id.in_({k[0] for k in keys}),
            _ST.c.study_instance_uid.in_({k[1] for k in keys}),
        )
    ):
        if (row.practice_id, row.study_instance_uid) in keys:
            cache[(row.practice_id, row.study_instance_uid)] = row.id
    new: dict[tuple[int, str], dict[str, Any]] = {}
    for item in items:  # a new study takes its header from its first instance in the batch
        key = (item.practice_id, item.study_instance_uid)
        if key not in cache and key not in new:
            new[key] = dict(
                practice_id=item.practice_id, study_instance_uid=item.study_instance_uid,
                calling_ae=item.calling_ae, modalities=[], instance_count=0, size_bytes=0,
                status=RECEIVING, first_received_at=now, last_received_at=now,
                **{f: getattr(item, f) for f in HEADER_NAMES},
            )
    if new:  # one multi-row INSERT for all of them (fifty practices at once: fifty new studies)
        for row in conn.execute(_INSERT_STUDIES, list(new.values())):
            cache[(row.practice_id, row.study_instance_uid)] = row.id


def _count_resent(
    conn: Connection, by_uid: dict[str, list[ReceivedInstance]], inserted: dict[str, int],
    cache: dict[tuple[int, str], int], now: datetime, overwrite: bool,
) -> tuple[dict[str, int], dict[int, int]]:
    """Count re-sent UIDs (and, with ``overwrite``, take their new header); ids and size deltas."""
    ids = dict(inserted)
    size_adjust: dict[int, int] = {}
    if len(inserted) == len(by_uid) and all(len(same) == 1 for same in by_uid.values()):
        return ids, size_adjust
    stored_before = {
        row.sop_instance_uid: row
        for row in conn.execute(
            select(_IT.c.id, _IT.c.sop_instance_uid, _IT.c.practice_id, _IT.c.size_bytes).where(
                _IT.c.sop_instance_uid.in_(set(by_uid) - set(inserted))
            )
        )
    } if len(inserted) < len(by_uid) else {}
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
        values: dict = {"received_count": _IT.c.received_count + len(resent), "updated_at": now}
        if overwrite:
            last = resent[-1]
            values.update(
                {f.name: getattr(last, f.name) for f in fields(last) if f.name != "practice_id"}
            )
            study_id = cache[(last.practice_id, last.study_instance_uid)]
            size_adjust[study_id] = size_adjust.get(study_id, 0) + last.size_bytes - old_size
        conn.execute(update(_IT).where(_IT.c.id == ids[uid]).values(**values))
    return ids, size_adjust


def _update_studies(
    conn: Connection, hub: Hub, by_uid: dict[str, list[ReceivedInstance]],
    inserted: dict[str, int], cache: dict[tuple[int, str], int], size_adjust: dict[int, int],
    now: datetime, stable_age: float,
) -> bool:
    """Per study: counts, sizes, last arrival, re-open, arm the stability check."""
    per_study: dict[int, dict] = {}
    for uid, same in by_uid.items():
        study_id = cache[(same[0].practice_id, same[0].study_instance_uid)]
        delta = per_study.setdefault(study_id, {"count": 0, "size": 0, "modalities": []})
        if uid in inserted:
            delta["count"] += 1
            delta["size"] += same[0].size_bytes
            if same[0].modality and same[0].modality not in delta["modalities"]:
                delta["modalities"].append(same[0].modality)
    due = now + timedelta(seconds=stable_age)
    grown = {sid: d for sid, d in per_study.items() if d["count"]}
    if grown:  # one executemany, then one read of what the studies became
        conn.execute(_BUMP_GROWN, [
            {"b_id": sid, "b_count": d["count"], "b_size": d["size"] + size_adjust.get(sid, 0),
             "b_now": now, "b_due": due}
            for sid, d in grown.items()
        ])
    after = {
        row.id: row for row in conn.execute(_STUDIES_AFTER, {"b_ids": list(grown)})
    } if grown else {}
    for study_id, delta in per_study.items():
        if not delta["count"]:  # only re-sent instances: counts stay, the size may change
            conn.execute(_BUMP_RESENT, {
                "b_id": study_id, "b_count": 0, "b_size": size_adjust.get(study_id, 0),
                "b_now": now,
            })
    armed = [sid for sid in grown if after[sid].stable_check_at == due]  # armed just now
    if armed:
        hub.jobs.enqueue_many_sync(
            conn, STABILITY_JOB, [(*stability_check(sid, stable_age, due), due) for sid in armed]
        )
    modalities = []
    for study_id, delta in grown.items():
        known = after[study_id].modalities or []
        missing = [m for m in delta["modalities"] if m not in known]
        if missing:
            modalities.append({"b_id": study_id, "b_modalities": [*known, *missing]})
    if modalities:  # a new study's first batch sets them
        conn.execute(_SET_MODALITIES, modalities)
    return bool(armed)
