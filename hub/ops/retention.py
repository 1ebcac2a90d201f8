"""Retention: delete the image files of delivered cases after a practice's retention period.

Default: keep everything. A practice listed in ``[operations] image_retention_days`` (by slug,
or ``"*"`` for every other practice) has the files of a study deleted once every case of the
study is delivered and the last delivery is older than that many days. Rows stay, marked
``purged_at``, so a case's history and its forward results remain; only the files go.

A durable job (``operations.retention``, scheduled every ``retention_every`` seconds) works in
batches: it marks a batch purged and commits, then deletes the files, then records one
operator event (``images.retention_deleted``) for the batch. A crash between the commit and the
deletions leaves purged rows with files, which the next run deletes (it looks for them first).
``vethub retention --dry-run`` lists what would go and changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import exists, func, select, update

from hub import events
from hub.db.models import Practice, Schedule
from hub.imaging.models import Case, CaseStatus, Instance
from hub.ops.backup import image_root_of
from hub.ops.config import operations_config

log = logging.getLogger(__name__)

JOB_KIND = "operations.retention"
SCHEDULE = "operations-retention"
EVENT = "images.retention_deleted"
BATCH = 500


@dataclass
class RetentionReport:
    """What a retention run deleted (or would, in a dry run), per practice."""
    dry_run: bool
    by_practice: dict[str, int] = field(default_factory=dict)  # slug -> files (to be) deleted
    bytes: int = 0
    batches: int = 0

    @property
    def files(self) -> int:
        return sum(self.by_practice.values())


def _days_for(hub: Any, slug: str) -> int | None:
    table = operations_config(hub).image_retention_days
    days = table.get(slug, table.get("*"))
    return int(days) if days is not None else None


def _eligible(practice_id: int, cutoff: Any) -> Any:
    """Instances (not yet purged) of studies whose every case is delivered (or reported), the last before
    ``cutoff``; a study with no case at all is never eligible."""
    undelivered = exists().where(Case.study_id == Instance.study_id,
                                 Case.status.not_in([CaseStatus.DELIVERED, CaseStatus.REPORTED]))
    last = (select(func.max(Case.delivered_at)).where(Case.study_id == Instance.study_id)
            .scalar_subquery())
    return (select(Instance.id, Instance.path, Instance.size_bytes)
            .where(Instance.practice_id == practice_id, Instance.purged_at.is_(None),
                   exists().where(Case.study_id == Instance.study_id), ~undelivered, last < cutoff)
            .order_by(Instance.id))


async def apply_retention(hub: Any, *, dry_run: bool = False) -> RetentionReport:
    report = RetentionReport(dry_run)
    root = image_root_of(hub.config)
    if root is None:
        return report
    if not dry_run:
        await _finish_purged(hub, root)
    async with hub.sessionmaker() as session:
        practices = list((await session.execute(select(Practice.id, Practice.slug))).all())
    now = hub.clock.now()
    for practice_id, slug in practices:
        days = _days_for(hub, slug)
        if days is None:
            continue
        cutoff = now - timedelta(days=days)
        while True:
            async with hub.transaction() as session:
                rows = list((await session.execute(_eligible(practice_id, cutoff).limit(BATCH))).all())
                if not rows or dry_run:
                    break
                await session.execute(update(Instance).where(Instance.id.in_([r.id for r in rows]))
                                      .values(purged_at=now))
            await _delete_batch(hub, root, practice_id, slug, days, rows, report)
        if dry_run and rows:
            async with hub.sessionmaker() as session:
                every = list((await session.execute(_eligible(practice_id, cutoff))).all())
            report.by_practice[slug] = len(every)
            report.bytes += sum(r.size_bytes for r in every)
    return report


async def _delete_batch(hub: Any, root: Path, practice_id: int, slug: str, days: int, rows: list[Any],
                        report: RetentionReport) -> None:
    gone = await asyncio.to_thread(_unlink, root, [r.path for r in rows])
    size = sum(r.size_bytes for r in rows)
    report.by_practice[slug] = report.by_practice.get(slug, 0) + len(rows)
    report.bytes += size
    report.batches += 1
    async with hub.transaction() as session:
        await events.record(
            session, EVENT, f"retention ({days} days) deleted {gone} image file(s) of delivered cases "
            f"of {slug}, {size} bytes", practice_id=practice_id, reason="retention",
            data={"files": gone, "bytes": size, "days": days, "first_instance_id": rows[0].id,
                  "last_instance_id": rows[-1].id})


def _unlink(root: Path, rels: list[str]) -> int:
    gone = 0
    for rel in rels:
        try:
            (root / rel).unlink()
            gone += 1
        except FileNotFoundError:
            gone += 1  # already gone: a re-run after a crash
        except OSError as err:
            log.warning("retention could not delete %s: %s", rel, err)
    return gone


async def _finish_purged(hub: Any, root: Path) -> None:
    """Delete the files of rows a crashed run marked purged but did not get to."""
    async with hub.sessionmaker() as session:
        rels = list((await session.execute(select(Instance.path).where(Instance.purged_at.is_not(None))))
                    .scalars())
    leftovers = await asyncio.to_thread(lambda: [r for r in rels if (root / r).exists()])
    if leftovers:
        await asyncio.to_thread(_unlink, root, leftovers)
        log.info("retention: deleted %d file(s) left by an interrupted run", len(leftovers))


async def retention_job(hub: Any, job: Any) -> None:
    report = await apply_retention(hub, dry_run=bool(job.payload.get("dry_run")))
    if report.files:
        log.info("retention: %d file(s), %d bytes deleted in %d batch(es)", report.files, report.bytes,
                 report.batches)


async def ensure_schedule(hub: Any) -> None:
    """A schedule only when some practice has a retention; otherwise one left from an earlier
    config is disabled (and none is created: the default keeps everything)."""
    config = operations_config(hub)
    async with hub.transaction() as session:
        if config.image_retention_days:
            schedule = await hub.jobs.ensure_schedule(session, SCHEDULE, JOB_KIND, {},
                                                      int(config.retention_every))
            schedule.enabled = True
        else:
            await session.execute(update(Schedule).where(Schedule.name == SCHEDULE).values(enabled=False))
