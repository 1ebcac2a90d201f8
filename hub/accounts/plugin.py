"""Built-in plugin wiring the accounts domain into the hub: config sections, routes, the
switch-deadline job, email templates, the ``vethub report onboarding`` command, and the
"first images received" stage."""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hub.accounts import api, pages
from hub.accounts.config import OnboardingSection, SwitchingSection
from hub.accounts.history import ACCOUNT_CHANGED_JOB, account_changed_job
from hub.accounts.switching import DEADLINE_JOB, deadline_job
from hub.hookspecs import hookimpl
from hub.messaging.outbound import register_internal_templates

if TYPE_CHECKING:
    from hub.core import Hub


@hookimpl
def vethub_config_sections():
    return {"onboarding": OnboardingSection, "switching": SwitchingSection}


@hookimpl
def vethub_job_handlers():
    return {DEADLINE_JOB: deadline_job, ACCOUNT_CHANGED_JOB: account_changed_job}


@hookimpl
def vethub_web_routes(hub: Hub):
    return [*api.routes, *pages.routes]


EMAILS = Path(__file__).parent / "templates" / "emails"
# welcome, set-password, switch notices...: the hub sends these itself, never the public API
register_internal_templates(sorted({p.name.split(".")[0] for p in EMAILS.glob("*.j2")}))


@hookimpl
def vethub_template_dirs():
    return [EMAILS]


@hookimpl
def vethub_instance_stored(hub: Hub, instance: Any):
    """Stamp "first images received". The receiver fires this for every instance, so after one
    look per practice (per process) that finds nothing left to stamp it costs nothing; the
    looks of one committed batch are one read (:class:`~hub.accounts.onboarding.FirstImages`)."""
    from hub.accounts.onboarding import FIRST_IMAGES, FirstImages, first_images_pending

    practice_id = instance.get("practice_id") if isinstance(instance, dict) else getattr(instance, "practice_id", None)
    if practice_id is None or not first_images_pending(hub, practice_id):
        return None
    return hub.state.setdefault(FIRST_IMAGES, lambda: FirstImages(hub)).stored(practice_id)


def _date(_ctx: Any, _param: Any, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("expected a date YYYY-MM-DD") from None


@click.group("report")
def report_group() -> None:
    """Reports companies need (the onboarding report), from the command line."""


@report_group.command("onboarding")
@click.option("--config", "config_path", envvar="VETHUB_CONFIG", default=None, metavar="PATH",
              help="Configuration file (default: $VETHUB_CONFIG or ./vethub.toml).")
@click.option("--company", default=None,
              help="Company slug or id (default: every company, as an operator sees it).")
@click.option("--from", "date_from", callback=_date, default=None, help="First request date (YYYY-MM-DD).")
@click.option("--to", "date_to", callback=_date, default=None, help="Last request date (YYYY-MM-DD).")
@click.option("--format", "fmt", type=click.Choice(["csv", "pdf", "json", "html"]), default="csv",
              help="Output format.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write here (default: stdout).")
def report_onboarding(config_path: str | None, company: str | None, date_from: date | None, date_to: date | None,
                      fmt: str, output: str | None) -> None:
    """One row per account request: stages, dates, days between them, current state.

    Example: vethub report onboarding --from 2026-11-01 --to 2026-11-30 --format pdf -o nov.pdf
    """
    from hub.accounts.errors import AccountsError
    from hub.accounts.manage import onboarding_report, resolve_company
    from hub.accounts.report import render
    from hub.cli_support import with_hub

    async def _go(hub: Hub) -> bytes:
        async with hub.transaction() as session:
            c = await resolve_company(session, company)
            report = await onboarding_report(session, hub, c, date_from, date_to)
        return render(report, fmt)

    try:
        body = with_hub(config_path, _go)
    except AccountsError as err:
        click.echo(f"error: {err.message}", err=True)
        sys.exit(1)
    if output:
        Path(output).write_bytes(body)
    else:
        sys.stdout.buffer.write(body)
        sys.stdout.buffer.flush()


@hookimpl
def vethub_cli_commands():
    return [report_group]
