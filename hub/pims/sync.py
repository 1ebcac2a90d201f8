"""The PIMS sync engine: drives one practice's connector and keeps the hub's copy current.

For each batch a connector yields, in one transaction: skip every record whose content hash
(:func:`hub.pims.normalise.content_hash`: the record as the connector gave it, the practice's
country and the normaliser's version) is the one stored on its row, normalise the others
(rejects go to ``pims_rejects`` with the raw payload and the reason), upsert the rest by
(practice_id, external_id) with the database's ``INSERT … ON CONFLICT DO UPDATE`` (only rows
whose values differ are touched), add the batch's counts to the run and store the batch's
checkpoint. A crash therefore resumes after the last committed batch, and a batch read twice
changes nothing and counts as unchanged. Inactivation and death arrive as status updates; nothing is deleted.
``vethub_client_synced`` fires, after the commit, for each client inserted or changed.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import chain, repeat
from typing import Any

from sqlalchemy import exists, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import Update

from hub import events
from hub.config import PracticeConfig, pims_connector_classes
from hub.db.base import table_of
from hub.db.models import Practice
from hub.db.transactions import run_transaction
from hub.ops.metrics import SYNC_FAILURES
from hub.pims.bulk import bulk_table, rehash, stored_hashes, upsert
from hub.pims.connector import ConnectorContext, PimsConnector
from hub.pims.models import (
    Client,
    RunStatus,
    RunTrigger,
    SyncCheckpoint,
    SyncReject,
    SyncRun,
)
from hub.pims.prepare import _COLUMNS, KINDS, RUN, Group, Preparation, Prepared, outcome
from hub.pims.records import (
    Batch,
    RecordKind,
    Reject,
)
from hub.state import HubKey

log = logging.getLogger(__name__)

#: a "running" run without a heartbeat for this long is taken for dead by the schedule.
STALE_SECONDS = 600

class SyncError(Exception):
    """A sync could not start (unknown practice or connector); the message says which."""


@dataclass(frozen=True)
class ConnectorEntry:
    """One ``[[practices.pims]]`` table of one practice."""

    practice: str
    name: str
    connector: str
    table: dict[str, Any]


@dataclass
class RunResult:
    """The outcome of one sync run: its status, what it wrote, refused, and how long it took."""
    run_id: int
    practice: str
    connector: str
    status: RunStatus
    counts: dict[str, dict[str, int]]
    rejected: int
    batches: int
    seconds: float
    error: str | None = None
    #: the connector's estimate of how far the run has got (0..1), when it can tell
    progress: float | None = None


def connector_entries(practices: Sequence[PracticeConfig], practice: str | None = None,
                      connector: str | None = None) -> list[ConnectorEntry]:
    """The configured connectors, optionally only one practice's and/or one name."""
    out = []
    for p in practices:
        if practice is not None and p.slug != practice:
            continue
        for table in p.pims:
            name = table.get("name") or table["connector"]
            if connector is None or connector in (name, table["connector"]):
                out.append(ConnectorEntry(p.slug, name, table["connector"], table))
    return out


#: Connectors live as long as their hub, so what they cache between runs (an API token that is
#: good for 12 hours) is reused by the next run; they are the hub's state, gone with it.
CONNECTORS: HubKey[dict[tuple[Any, ...], PimsConnector]] = HubKey("pims_connectors")


def build_connector(hub: Any, entry: ConnectorEntry, practice: Practice) -> PimsConnector:
    """The connector for ``entry``: the one built for an earlier run of this hub when the
    entry's config and the practice's country and time zone are the same, else a new one."""
    key = (entry.practice, entry.name, json.dumps(entry.table, sort_keys=True, default=str),
           practice.country, practice.timezone, id(hub.http))
    cache = hub.state.setdefault(CONNECTORS, dict)
    if key not in cache:
        cache[key] = _new_connector(hub, entry, practice)
    return cache[key]


def _new_connector(hub: Any, entry: ConnectorEntry, practice: Practice) -> PimsConnector:
    classes = pims_connector_classes(hub.pm)
    cls: type[PimsConnector] | None = classes.get(entry.connector)
    if cls is None:
        raise SyncError(f"practice {entry.practice!r}: no connector named {entry.connector!r} is installed")
    config = cls.config_model.model_validate({k: v for k, v in entry.table.items() if k != "connector"})
    context = ConnectorContext(
        practice_slug=practice.slug, practice_country=practice.country,
        practice_timezone=practice.timezone, http=hub.http,
        data_dir=hub.data_dir / "pims" / practice.slug / entry.name, now=hub.clock.now,
    )
    return cls(config, context)


def _source(raw: Any) -> str | None:
    if isinstance(raw, dict) and "file" in raw:
        return f"{raw['file']}:{raw.get('line', '')}"
    return None


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _empty_counts() -> dict[str, dict[str, int]]:
    return {kind: {"inserted": 0, "updated": 0, "unchanged": 0, "rejected": 0} for kind in KINDS}


class SyncEngine:
    """Runs one practice's connector entry; see the module docstring."""

    def __init__(self, hub: Any, entry: ConnectorEntry, *,
                 progress: Callable[[RunResult], None] | None = None) -> None:
        self.hub = hub
        self.entry = entry
        self.progress = progress

    async def run(self, *, full: bool = False, trigger: RunTrigger = RunTrigger.CLI) -> RunResult:
        hub, entry = self.hub, self.entry
        started = time.monotonic()
        now = hub.clock.now()
        async with hub.transaction() as session:
            practice = (await session.execute(
                select(Practice).where(Practice.slug == entry.practice))).scalar_one_or_none()
            if practice is None:
                raise SyncError(f"no practice with slug {entry.practice!r} in the database")
            running = select(SyncRun).where(SyncRun.practice_id == practice.id,
                                            SyncRun.connector == entry.name,
                                            SyncRun.status == RunStatus.RUNNING)
            alive = (await session.execute(running.where(
                SyncRun.heartbeat_at > now - timedelta(seconds=STALE_SECONDS)))).scalars().first()
            if alive is not None and trigger == RunTrigger.SCHEDULE:
                # The previous tick's run is still going (a long full sync): let it finish.
                log.info("PIMS sync %s/%s: run %s still running, tick skipped",
                         entry.practice, entry.name, alive.id)
                return RunResult(alive.id, entry.practice, entry.name, RunStatus.SKIPPED,
                                 _empty_counts(), 0, 0, 0.0)
            # Any other run still "running" was cut off (its process died), or an operator
            # chose to run anyway: it is over.
            await session.execute(
                update(SyncRun).where(SyncRun.id.in_(running.with_only_columns(SyncRun.id)))
                .values(status=RunStatus.INTERRUPTED, finished_at=now))
            previous = (await session.execute(
                select(SyncRun.status).where(SyncRun.practice_id == practice.id,
                                             SyncRun.connector == entry.name,
                                             SyncRun.status.in_((RunStatus.SUCCEEDED, RunStatus.FAILED)))
                .order_by(SyncRun.id.desc()).limit(1))).scalar_one_or_none()
            run = SyncRun(practice_id=practice.id, connector=entry.name, full=full,
                          trigger=trigger, status=RunStatus.RUNNING, started_at=now, heartbeat_at=now,
                          counts=_empty_counts())
            session.add(run)
            checkpoint = (await session.execute(
                select(SyncCheckpoint.checkpoint).where(SyncCheckpoint.practice_id == practice.id,
                                                        SyncCheckpoint.connector == entry.name)
            )).scalar_one_or_none()
            await session.flush()
            empty = await _empty_tables(session, practice.id)
        # On PostgreSQL a kind of which the practice had no row needs no stored-hash lookup
        # (see _empty_tables); on SQLite the lookup tells inserts from updates.
        self.skip_lookup = empty if hub.engine.dialect.name == "postgresql" else frozenset()
        self.preparation = Preparation(practice.country, empty)
        self.practice_id = practice.id
        self.run_id = run.id
        result = RunResult(run.id, entry.practice, entry.name, RunStatus.RUNNING, _empty_counts(), 0, 0, 0.0)
        want_events = bool(hub.pm.hook.vethub_client_synced.get_hookimpls())
        # The connector may prepare this run's batches ahead (hub.pims.prepare).
        preparing = RUN.set(self.preparation)
        try:
            connector = build_connector(hub, entry, practice)
            batches = connector.batches(None if full else checkpoint, full)
            try:
                async for batch in batches:
                    changed = await self._apply(batch, result)
                    result.seconds = time.monotonic() - started
                    result.progress = batch.progress
                    if want_events and changed:
                        await self._fire(changed)
                    if self.progress:
                        self.progress(result)
            finally:
                close = getattr(batches, "aclose", None)
                if close is not None:
                    await close()
        except Exception as err:
            result.status, result.error = RunStatus.FAILED, f"{type(err).__name__}: {err}"
            SYNC_FAILURES.labels(entry.name, type(err).__name__).inc()
            log.warning("PIMS sync %s/%s failed: %s", entry.practice, entry.name, result.error)
        else:
            result.status = RunStatus.SUCCEEDED
        finally:
            RUN.reset(preparing)
        result.seconds = time.monotonic() - started
        async with hub.transaction() as session:
            await session.execute(update(SyncRun).where(SyncRun.id == run.id).values(
                status=result.status, finished_at=hub.clock.now(), error=result.error))
            # One event when a connector starts failing and one when it recovers, not one per run.
            if result.status == RunStatus.FAILED and previous != RunStatus.FAILED:
                await events.record(session, "pims.sync_failed",
                                    f"PIMS sync {entry.name} of {entry.practice} failed: {result.error}",
                                    practice_id=practice.id, data={"run_id": run.id})
            elif result.status == RunStatus.SUCCEEDED and previous == RunStatus.FAILED:
                await events.record(session, "pims.sync_recovered",
                                    f"PIMS sync {entry.name} of {entry.practice} works again",
                                    practice_id=practice.id, data={"run_id": run.id})
        return result

    async def _apply(self, batch: Batch, result: RunResult) -> list[int]:
        """Normalise, upsert and checkpoint one batch in one transaction (on SQLite in one
        hand-off to its thread: :func:`hub.db.transactions.run_transaction`); return changed
        client ids. ``result`` takes the batch's counts once it has committed."""
        now = self.hub.clock.now()
        prepared = batch.prepared
        if not (isinstance(prepared, Prepared) and prepared.preparation is self.preparation):
            # Not done ahead by the connector: done here, still outside the transaction.
            prepared = self.preparation.prepare(batch)
        counts = {kind: dict(c) for kind, c in result.counts.items()}
        changed = await run_transaction(self.hub.engine, functools.partial(
            self._write, batch=batch, groups=prepared.groups, now=now, counts=counts,
            rejected=result.rejected, batches=result.batches + 1))
        result.counts = counts
        result.rejected += len(batch.rejects)
        result.batches += 1
        return changed

    def _write(self, conn: Connection, *, batch: Batch, groups: list[Group], now: datetime,
               counts: dict[str, dict[str, int]], rejected: int, batches: int) -> list[int]:
        """The batch's transaction (see :meth:`_apply`); adds its counts to ``counts``."""
        changed_clients: list[int] = []
        for group in groups:
            kind = group.kind
            bulk = bulk_table(conn.dialect, KINDS[kind][1], _COLUMNS[kind])
            stored = ({} if kind in self.skip_lookup else stored_hashes(
                conn, bulk, self.practice_id, [r.external_id for r in group.records]))
            rows, skipped = self._rows(group, stored, batch.rejects)
            c = counts[kind]
            c["unchanged"] += skipped
            if not rows:
                continue
            written = upsert(conn, bulk, self.practice_id, now, rows)
            # SQLite cannot say which rows it inserted, but every row of this practice that
            # exists was read above under the write lock this transaction holds.
            inserted = sum(1 for _i, x, new in written if (x not in stored if new is None else new))
            c["inserted"] += inserted
            c["updated"] += len(written) - inserted
            c["unchanged"] += len(rows) - len(written)
            # A record whose PIMS content changed but whose normalised row did not (a
            # whitespace edit, a new normaliser version): the row is unchanged, but its hash
            # must move on or every later sync would normalise the record again.
            done = {x for _i, x, _n in written}
            rehash(conn, bulk, self.practice_id,
                   [(row[0], row[-1]) for row in rows if row[0] not in done and stored.get(row[0]) != row[-1]])
            if kind == "client":
                changed_clients = [i for i, _x, _n in written]
        if batch.rejects:
            for r in batch.rejects:
                counts[r.kind]["rejected"] += 1
            conn.execute(table_of(SyncReject).insert(), [
                {"practice_id": self.practice_id, "connector": self.entry.name,
                 "run_id": self.run_id, "kind": r.kind, "external_id": r.external_id,
                 "reason": r.reason, "source": r.source, "raw": _jsonable(r.raw),
                 "created_at": now} for r in batch.rejects])
        progress = update(SyncRun).where(SyncRun.id == self.run_id).values(
            counts=counts, rejected=rejected + len(batch.rejects), batches=batches,
            heartbeat_at=now)
        save_checkpoint(conn, self.practice_id, self.entry.name, _jsonable(batch.checkpoint), now,
                        with_statement=progress)
        return changed_clients

    def _rows(self, group: Group, stored: dict[str, str | None],
              rejects: list[Reject]) -> tuple[list[tuple[Any, ...]], int]:
        """The rows to upsert (tuples of ``_COLUMNS[kind]``): every record whose content hash
        differs from its row's, normalised and validated (here, or ahead: hub.pims.prepare)
        with rejects appended to ``rejects``; and how many were skipped because their hash is
        unchanged."""
        kind, country = group.kind, self.preparation.country
        rows: list[tuple[Any, ...]] = []
        skipped = 0
        ahead_of = group.outcomes if group.outcomes is not None else repeat(None, len(group.records))
        todo = chain(zip(group.records, group.digests, ahead_of, strict=True),
                     ((r, None, None) for r in group.unkeyed))
        for record, digest, ahead in todo:
            if digest is not None and stored.get(record.external_id) == digest:
                skipped += 1
                continue
            result = ahead if ahead is not None else outcome(kind, record, digest, country)
            if isinstance(result, str):
                raw = record.raw if record.raw is not None else dataclasses.asdict(record)
                rejects.append(Reject(kind, result, raw, record.external_id or None,
                                      _source(record.raw)))
            else:
                rows.append(result)
        return rows, skipped

    async def _fire(self, client_ids: list[int]) -> None:
        async with self.hub.sessionmaker() as session:
            clients = (await session.execute(select(Client).where(Client.id.in_(client_ids)))).scalars()
            for client in list(clients):
                await self.hub.fire("vethub_client_synced", hub=self.hub, client=client)


async def _empty_tables(session: AsyncSession, practice_id: int) -> frozenset[RecordKind]:
    """The kinds of which the practice has no row. Their records are normalised ahead
    (hub.pims.prepare), and on PostgreSQL a run does not look up their stored hashes (nothing
    to skip), which saves two round trips a batch.

    Rows may still appear meanwhile (another run of the same practice, which an operator may
    start): on PostgreSQL the upsert then updates them, and counts inserts and updates exactly
    by itself (``xmax``); each record is only normalised, not skipped, and a row it leaves
    unchanged takes its hash. On SQLite the lookup costs no round trip and tells inserts from
    updates (see :func:`hub.pims.bulk.upsert`), so it always runs."""
    found = (await session.execute(select(*[
        exists().where(table.c.practice_id == practice_id).label(kind)
        for kind, (_a, table, _c) in KINDS.items()]))).one()
    return frozenset(kind for kind, present in zip(KINDS, found, strict=True) if not present)


def save_checkpoint(conn: Connection, practice_id: int, connector: str,
                    checkpoint: dict[str, Any], now: datetime, *,
                    with_statement: Update | None = None) -> None:
    """Store the checkpoint; ``with_statement`` (the run's progress) runs in the same
    transaction: on PostgreSQL in the same statement, as a data-modifying CTE, which saves a
    round trip a batch."""
    table = table_of(SyncCheckpoint)
    postgresql = conn.dialect.name == "postgresql"
    insert = pg_insert(table) if postgresql else sqlite_insert(table)
    stmt = insert.values(practice_id=practice_id, connector=connector, checkpoint=checkpoint,
                         updated_at=now)
    stmt = stmt.on_conflict_do_update(
        index_elements=["practice_id", "connector"],
        set_={"checkpoint": stmt.excluded.checkpoint, "updated_at": stmt.excluded.updated_at})
    if with_statement is not None:
        if postgresql:
            stmt = stmt.add_cte(with_statement.cte("progress"))
        else:
            conn.execute(with_statement)
    conn.execute(stmt)


async def sync_practices(hub: Any, *, practice: str | None = None, connector: str | None = None,
                         full: bool = False, trigger: RunTrigger = RunTrigger.CLI,
                         progress: Callable[[ConnectorEntry, RunResult], None] | None = None,
                         ) -> list[RunResult]:
    """Run every configured connector matching the filters, one after another."""
    entries = connector_entries(hub.config.practices, practice, connector)
    if not entries:
        what = " ".join(f"{k} {v!r}" for k, v in (("practice", practice), ("connector", connector)) if v)
        raise SyncError(f"no PIMS connector is configured{' for ' + what if what else ''}")
    results = []
    for entry in entries:
        engine = SyncEngine(hub, entry, progress=functools.partial(progress, entry) if progress else None)
        results.append(await engine.run(full=full, trigger=trigger))
    return results
