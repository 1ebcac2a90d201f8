"""The clients domain as a built-in plugin: config section, routes, CLI, the reminder job."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import click
from aiohttp import web
from sqlalchemy import update

from hub.clients.config import ClientsConfig, clients_config
from hub.db.models import Schedule
from hub.hookspecs import hookimpl
from hub.jobs import JobContext


@hookimpl
def vethub_config_sections() -> dict[str, Any]:
    return {"clients": ClientsConfig}


@hookimpl
def vethub_web_routes(hub: Any) -> list[web.AbstractRouteDef]:
    from hub.clients import api, survey_pages

    return [*api.routes, *survey_pages.routes, *survey_pages.pages]


@hookimpl
def vethub_template_dirs() -> list[Path]:
    return [Path(__file__).parent / "templates"]


@hookimpl
def vethub_cli_commands() -> list[click.Command]:
    from hub.clients.cli import clients_group

    return [clients_group]


async def reminder_job(hub: Any, job: JobContext) -> None:
    """One tick of the schedule: reminders, then surveys after visits."""
    from hub.clients.reminders import run_reminders

    await run_reminders(hub, job.payload.get("practice"), surveys=True)


@hookimpl
def vethub_job_handlers() -> dict[str, Any]:
    from hub.clients.reminders import JOB_KIND

    return {JOB_KIND: reminder_job}


async def _ensure_schedule(hub: Any) -> None:
    """The reminder and survey job runs while some practice has a PIMS connector (reminders
    and visits come from the PIMS) and ``reminder_every_seconds`` is not 0."""
    from hub.clients.reminders import JOB_KIND, SCHEDULE_NAME

    every = clients_config(hub).reminder_every_seconds
    wanted = every > 0 and any(p.pims for p in hub.config.practices)
    # The first tick comes one interval after the schedule is first declared: a hub starting
    # for the first time has synced no PIMS yet, so there is nothing to remind anyone of.
    first = hub.clock.now() + timedelta(seconds=max(every, 1))
    async with hub.transaction() as session:
        if wanted:
            schedule = await hub.jobs.ensure_schedule(session, SCHEDULE_NAME, JOB_KIND, {}, every,
                                                      first_run_at=first)
            schedule.enabled = True
        else:  # declared by an earlier config: keep the row, stop the ticks
            await session.execute(update(Schedule).where(Schedule.name == SCHEDULE_NAME)
                                  .values(enabled=False))


@hookimpl
def vethub_startup(hub: Any) -> Any:
    return _ensure_schedule(hub)
