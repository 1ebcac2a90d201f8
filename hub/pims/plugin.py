"""The PIMS sync plugin: the periodic sync jobs, ``vethub sync`` and ``GET /api/practices/{id}/sync``."""

from __future__ import annotations

import asyncio
import functools
import sys
from pathlib import Path
from typing import Any

import click
from aiohttp import web
from sqlalchemy import select, true, update

from hub.cli_support import config_option, with_hub
from hub.db.models import Practice, Schedule
from hub.hookspecs import hookimpl
from hub.jobs import JobContext, JobKind, PermanentJobError
from hub.pims import api
from hub.pims.connector import DEFAULT_SYNC_EVERY
from hub.pims.models import RunStatus, RunTrigger, SyncRun
from hub.pims.sync import ConnectorEntry, RunResult, SyncEngine, SyncError, connector_entries

JOB_KIND = "pims.sync"
SCHEDULE_PREFIX = "pims-sync:"


def schedule_name(entry: ConnectorEntry) -> str:
    return f"{SCHEDULE_PREFIX}{entry.practice}:{entry.name}"


def _create_own_drop_dirs(hub: Any) -> None:
    """A drop folder inside the hub's own data dir (as the quick start's is) is the hub's to
    create; one elsewhere must exist already: missing, it is a misspelling that readiness
    reports rather than a folder the hub should invent."""
    root = Path(hub.data_dir).resolve()
    for entry in connector_entries(hub.config.practices):
        drop = entry.table.get("drop_dir")
        if drop is not None and Path(str(drop)).resolve().is_relative_to(root):
            Path(str(drop)).mkdir(parents=True, exist_ok=True)


async def _ensure_schedules(hub: Any) -> None:
    """One periodic sync per configured connector; schedules of connectors no longer in the
    config (or with ``sync_every_seconds = 0``) are disabled, not left to fail every tick."""
    await asyncio.to_thread(_create_own_drop_dirs, hub)
    wanted = set()
    async with hub.transaction() as session:
        for entry in connector_entries(hub.config.practices):
            every = int(entry.table.get("sync_every_seconds", DEFAULT_SYNC_EVERY))
            if every > 0:
                schedule = await hub.jobs.ensure_schedule(
                    session, schedule_name(entry), JOB_KIND,
                    {"practice": entry.practice, "connector": entry.name}, every)
                schedule.enabled = True
                wanted.add(schedule.name)
        await session.execute(
            update(Schedule).where(Schedule.name.like(f"{SCHEDULE_PREFIX}%"),
                                   Schedule.name.not_in(wanted) if wanted else true())
            .values(enabled=False))


async def run_sync_job(hub: Any, job: JobContext) -> None:
    """A scheduled (or enqueued) run; payload ``{"practice", "connector", "full"?}``."""
    entries = connector_entries(hub.config.practices, job.payload["practice"],
                                job.payload["connector"])
    if not entries:
        raise PermanentJobError(f"no PIMS connector {job.payload['connector']!r} is configured "
                                f"for practice {job.payload['practice']!r}")
    # A failed run is recorded (run row, operator event) and the next tick tries again; the job
    # itself does not retry, so failing runs do not pile up behind the schedule.
    try:
        await SyncEngine(hub, entries[0]).run(full=bool(job.payload.get("full")),
                                              trigger=RunTrigger.SCHEDULE)
    except SyncError as err:
        raise PermanentJobError(str(err)) from err


async def sync_dead(session: Any, hub: Any, job: JobContext, reason: str) -> None:
    """``on_dead`` of the sync job: a run its dead job left ``running`` (its worker died; no
    heartbeat for a lease) ends ``failed`` with the reason, which readiness then reports."""
    from datetime import timedelta

    from hub import events
    from hub.ops.metrics import SYNC_FAILURES

    practice_id = (await session.execute(
        select(Practice.id).where(Practice.slug == job.payload.get("practice")))).scalar_one_or_none()
    if practice_id is None:
        return
    connector = str(job.payload.get("connector"))
    now = hub.clock.now()
    stale = now - timedelta(seconds=hub.config.jobs.lease_seconds)
    await session.execute(
        update(SyncRun).where(SyncRun.practice_id == practice_id, SyncRun.connector == connector,
                              SyncRun.status == RunStatus.RUNNING, SyncRun.heartbeat_at < stale)
        .values(status=RunStatus.FAILED, finished_at=now, error=f"sync job {job.id} is dead: {reason}"))
    SYNC_FAILURES.labels(connector, "job_dead").inc()
    await events.record(session, "pims.sync_failed",
                        f"PIMS sync {connector} of {job.payload.get('practice')} failed: its job is dead: {reason}",
                        practice_id=practice_id, reason="job_dead", data={"job_id": job.id})


@hookimpl
def vethub_job_handlers() -> dict[str, Any]:
    return {JOB_KIND: JobKind(run_sync_job, on_dead=sync_dead)}


@hookimpl
def vethub_startup(hub: Any) -> Any:
    return _ensure_schedules(hub)


@hookimpl
def vethub_health_checks(hub: Any) -> dict[str, Any]:
    """One readiness check per configured connector, from its last finished run (no call to
    the PIMS: a probe every few seconds must not spend the PIMS's rate limit)."""
    return {f"pims:{entry.practice}/{entry.name}": functools.partial(_last_run_health, hub, entry)
            for entry in connector_entries(hub.config.practices)}


async def _last_run_health(hub: Any, entry: ConnectorEntry) -> tuple[bool, str]:
    drop_dir = entry.table.get("drop_dir")
    if drop_dir is not None and not await asyncio.to_thread(Path(str(drop_dir)).is_dir):  # local, no PIMS call
        return False, f"drop folder {drop_dir} does not exist (practices.pims.drop_dir)"
    async with hub.sessionmaker() as session:
        row = (await session.execute(
            select(SyncRun.status, SyncRun.finished_at, SyncRun.error)
            .join(Practice, Practice.id == SyncRun.practice_id)
            .where(Practice.slug == entry.practice, SyncRun.connector == entry.name,
                   SyncRun.status.in_((RunStatus.SUCCEEDED, RunStatus.FAILED)))
            .order_by(SyncRun.id.desc()).limit(1))).first()
    if row is None:
        return True, "not synced yet"
    if row.status == RunStatus.FAILED:
        return False, f"last sync failed: {row.error}"
    return True, f"last sync succeeded at {row.finished_at.isoformat()}"


@hookimpl
def vethub_web_routes(hub: Any) -> list[web.AbstractRouteDef]:
    return list(api.routes)


class _ProgressBars:
    """One click progress bar per connector run, on a terminal only."""

    STEPS = 1000

    def __init__(self) -> None:
        self.entry: ConnectorEntry | None = None
        self.bar: Any = None
        self.shown = 0

    def __call__(self, entry: ConnectorEntry, result: RunResult) -> None:
        if entry is not self.entry:
            self.close()
            self.entry = entry
            self.bar = click.progressbar(length=self.STEPS, label=f"{entry.practice}/{entry.name}",
                                         show_eta=True, show_percent=True)
            self.bar.__enter__()
            self.shown = 0
        done = sum(sum(v for k, v in c.items() if k != "rejected") for c in result.counts.values())
        self.bar.label = f"{entry.practice}/{entry.name} {done:,} records, {result.rejected:,} rejected"
        target = int((result.progress or 0.0) * self.STEPS)
        if target > self.shown:
            self.bar.update(target - self.shown)
            self.shown = target
        else:
            self.bar.render_progress()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


@click.command("sync")
@config_option
@click.option("--practice", default=None, help="Only this practice (slug).")
@click.option("--connector", default=None, help="Only this connector (entry name or connector).")
@click.option("--full", is_flag=True, help="Read everything, not only changes since the checkpoint.")
def sync_command(config_path: str | None, practice: str | None, connector: str | None,
                 full: bool) -> None:
    """Sync practices' PIMS data now (every configured connector unless filtered).

    Example: vethub sync --practice demo-clinic --full
    """
    from hub.pims.sync import sync_practices

    progress = _ProgressBars() if sys.stdout.isatty() else None

    async def _go(hub: Any) -> list[RunResult]:
        return await sync_practices(hub, practice=practice, connector=connector, full=full,
                                    trigger=RunTrigger.CLI, progress=progress)

    try:
        results = with_hub(config_path, _go)
    except SyncError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(1)
    finally:
        if progress:
            progress.close()
    for r in results:
        counts = ", ".join(f"{kind}s +{c['inserted']} ~{c['updated']} ={c['unchanged']}"
                           for kind, c in r.counts.items() if any(c.values()))
        click.echo(f"{r.practice}/{r.connector}: {r.status} in {r.seconds:.1f}s "
                   f"({counts or 'nothing new'}; {r.rejected} rejected)"
                   + (f": {r.error}" if r.error else ""))
    if any(r.status != RunStatus.SUCCEEDED for r in results):
        sys.exit(1)


@hookimpl
def vethub_cli_commands() -> list[click.Command]:
    return [sync_command]
