"""The `vethub` command line."""

from __future__ import annotations

import asyncio
import json
import sys
import tomllib
from typing import Any

import click

from hub import jobs as jobs_mod
from hub.cli_support import config_option, load_or_exit, with_hub
from hub.cli_tokens import parse_expires
from hub.cli_tokens import register as register_token_commands
from hub.config import resolve_path
from hub.console.cli import create_user_command
from hub.core import Hub
from hub.plugins import PluginError, get_plugin_manager


@click.group()
@click.version_option(package_name="vethub", prog_name="vethub")
def cli() -> None:
    """VetHub: an integration hub for veterinary practices."""


@cli.command()
@config_option
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None, help="Log format (default: config).")
@click.option("--host", default=None, help="Override http.host.")
@click.option("--port", type=int, default=None, help="Override http.port (0 picks a free port).")
@click.option("--debug", is_flag=True, help="Show the full traceback of a start-up failure.")
def run(config_path: str | None, log_format: str | None, host: str | None, port: int | None,
        debug: bool) -> None:
    """Run the hub daemon (HTTP API, console, DICOM, job workers) until SIGTERM or SIGINT.

    Exit codes are listed in docs/operator-guide.md.

    Example: vethub run --config config.example.toml
    """
    from hub import logging_setup
    from hub.daemon import serve
    from hub.ops.startup import report

    config = load_or_exit(config_path)
    logging_setup.configure(config.logging.level, log_format or config.logging.format)
    try:
        asyncio.run(serve(config, host=host, port=port))
    except Exception as err:  # one line naming file, key and remedy (hub.ops.startup)
        sys.exit(report(err, config, debug=debug, host=host, port=port))


@cli.command("check-config")
@config_option
def check_config(config_path: str | None) -> None:
    """Validate the configuration; exit 1 listing every problem, 0 with what is enabled.

    Example: vethub check-config --config /etc/vethub/vethub.toml
    """
    config = load_or_exit(config_path)
    pm = get_plugin_manager(config.plugins.disabled)
    click.echo(f"{resolve_path(config_path)}: OK")
    click.echo(f"database: {config.database.url.split('@')[-1]}")
    click.echo(f"http: {config.http.host}:{config.http.port}")
    click.echo(f"plugins enabled: {', '.join(sorted(n for n, p in pm.list_name_plugin() if p)) or 'none'}")
    if config.plugins.disabled:
        click.echo(f"plugins disabled: {', '.join(config.plugins.disabled)}")
    sections = [name for name in config.redacted() if config.section(name) is not None]
    click.echo(f"plugin sections: {', '.join(sections) or 'none'}")
    click.echo(f"companies: {len(config.companies)}, practices: {len(config.practices)}, accounts: {len(config.accounts)}")
    from hub.imaging.delivery import describe_settings

    for c in config.companies:
        dest = c.destination.model_dump() if c.destination is not None else None
        click.echo(f"company {c.slug}: cases delivered {describe_settings(dest, c.reading_email or c.email)}")

    from hub.ops.config_checks import warnings

    for warning in warnings(config):
        click.echo(f"warning: {warning}", err=True)


@cli.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins(config_path: str | None, as_json: bool) -> None:
    """List plugins: name, version, origin and the hooks each implements.

    Example: vethub plugins --json
    """
    disabled = _disabled_from(config_path)
    try:
        pm = get_plugin_manager(disabled)
    except PluginError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(1)
    infos = pm.describe()
    if as_json:
        click.echo(json.dumps([{**i.__dict__, "hooks": list(i.hooks)} for i in infos], indent=2))
        return
    for info in infos:
        click.echo(f"{info.name:<20} {info.version:<10} {info.origin:<30} {', '.join(info.hooks)}")
    for name in sorted(disabled):
        click.echo(f"{name:<20} {'':<10} {'disabled by config':<30}")


def _disabled_from(config_path: str | None) -> list[str]:
    path = resolve_path(config_path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return []
    disabled = (raw.get("plugins") or {}).get("disabled", [])
    return [str(d) for d in disabled] if isinstance(disabled, list) else []


@cli.group()
def db() -> None:
    """The database schema: apply the migrations this version ships."""


@db.command()
@config_option
def upgrade(config_path: str | None) -> None:
    """Apply the migrations that ship with this version (PostgreSQL: before starting replicas).

    Example: vethub db upgrade --config vethub.toml
    """

    async def _go(hub: Hub) -> None:
        click.echo("database is at the current migration")

    with_hub(config_path, _go, upgrade=True)


@cli.group()
def jobs() -> None:
    """The durable job queue: list, show and replay jobs."""


@jobs.command("list")
@config_option
@click.option("--status", type=click.Choice(jobs_mod.STATUSES), default=None, help="Only jobs in this state.")
@click.option("--kind", default=None, help="Only jobs of this kind (e.g. messaging.send).")
@click.option("--limit", type=int, default=100, help="At most this many, newest first.")
def jobs_list(config_path: str | None, status: str | None, kind: str | None, limit: int) -> None:
    """List jobs, newest first.

    Example: vethub jobs list --status dead
    """

    async def _go(hub: Hub) -> None:
        async with hub.sessionmaker() as session:
            rows = await jobs_mod.list_jobs(session, status=status, kind=kind, limit=limit)
        for j in rows:
            err = (j.last_error or "").splitlines()[0][:80] if j.last_error else ""
            click.echo(f"{j.id:>8} {j.status:<10} {j.kind:<32} attempts={j.attempts}/{j.max_attempts} {err}")

    with_hub(config_path, _go)


@jobs.command("show")
@config_option
@click.argument("job_id", type=int)
def jobs_show(config_path: str | None, job_id: int) -> None:
    """Show one job in full, as JSON (payload, attempts, last error).

    Example: vethub jobs show 42
    """
    from hub.db.models import Job
    from hub.web.api_core import job_json

    async def _go(hub: Hub) -> dict[str, Any] | None:
        async with hub.sessionmaker() as session:
            job = await session.get(Job, job_id)
            return job_json(job) if job else None

    data = with_hub(config_path, _go)
    if data is None:
        click.echo(f"error: no job {job_id}", err=True)
        sys.exit(1)
    click.echo(json.dumps(data, indent=2, default=str))


@jobs.command("retry")
@config_option
@click.argument("job_ids", type=int, nargs=-1)
@click.option("--all-dead", is_flag=True, help="Replay every dead job.")
def jobs_retry(config_path: str | None, job_ids: tuple[int, ...], all_dead: bool) -> None:
    """Replay dead jobs (by id, or all of them): each is queued again with fresh attempts.

    Example: vethub jobs retry 42 43, or vethub jobs retry --all-dead
    """
    if not job_ids and not all_dead:
        click.echo("error: name job ids or pass --all-dead", err=True)
        sys.exit(2)

    async def _go(hub: Hub) -> int:
        async with hub.transaction() as session:
            return await jobs_mod.retry_jobs(session, hub.clock.now(), list(job_ids), all_dead=all_dead)

    click.echo(f"requeued {with_hub(config_path, _go)} job(s)")


@cli.group()
def admin() -> None:
    """Administration: API tokens and sign-ins."""


@admin.command("create-token")
@config_option
@click.option("--role", type=click.Choice(["operator", "company_admin", "practice_staff"]), required=True,
              help="What the token may do.")
@click.option("--company", default=None, help="Company slug (company_admin).")
@click.option("--practice", default=None, help="Practice slug (practice_staff).")
@click.option("--name", default="", help="What the token is for.")
@click.option("--expires", default=None, help="Lifetime (30d, 12h, 2w) or ISO date; default: never.")
def create_token(config_path: str | None, role: str, company: str | None, practice: str | None, name: str,
                 expires: str | None) -> None:
    """Create an API token; it is printed once, alone on the last line.

    Example: vethub admin create-token --role practice_staff --practice demo-clinic --expires 30d
    """
    from sqlalchemy import select

    from hub import audit
    from hub.auth import AuthError, issue_token
    from hub.db.models import Company, Practice

    async def _go(hub: Hub) -> str:
        async with hub.transaction() as session:
            company_id = practice_id = None
            if company:
                company_id = (await session.execute(select(Company.id).where(Company.slug == company))).scalar()
                if company_id is None:
                    raise click.UsageError(f"no company with slug {company!r}")
            if practice:
                practice_id = (await session.execute(select(Practice.id).where(Practice.slug == practice))).scalar()
                if practice_id is None:
                    raise click.UsageError(f"no practice with slug {practice!r}")
            try:
                token, row = await issue_token(session, role=role, company_id=company_id,
                                               practice_id=practice_id, name=name,
                                               expires_at=parse_expires(expires, hub.clock.now()))
            except (ValueError, AuthError) as err:
                raise click.UsageError(str(err)) from err
            await audit.record(session, "cli", "create_token", "api_token", row.id,
                               after={"role": role, "company_id": company_id, "practice_id": practice_id,
                                      "name": name}, company_id=company_id, practice_id=practice_id)
            return token

    token = with_hub(config_path, _go)
    click.echo(f"created a {role} token; store it now, it is not shown again:")
    click.echo(token)


admin.add_command(create_user_command)
register_token_commands(admin)


@cli.group()
def events() -> None:
    """Operator events (rejected associations, bounces, dead jobs...)."""


@events.command("list")
@config_option
@click.option("--kind", default=None, help="Only events of this kind (e.g. dicom.association_rejected).")
@click.option("--limit", type=int, default=50, help="At most this many, newest first.")
def events_list(config_path: str | None, kind: str | None, limit: int) -> None:
    """List recent operator events, newest first.

    Example: vethub events list --kind dicom.association_rejected
    """
    from hub import events as events_mod

    async def _go(hub: Hub) -> None:
        async with hub.sessionmaker() as session:
            for e in await events_mod.list_events(session, kind=kind, limit=limit):
                click.echo(f"{e.at:%Y-%m-%d %H:%M:%S} {e.kind:<24} {e.message}")

    with_hub(config_path, _go)


def _add_plugin_commands(group: click.Group) -> None:
    try:
        pm = get_plugin_manager(_disabled_from(None))
    except PluginError as err:
        click.echo(f"warning: plugin commands unavailable: {err}", err=True)
        return
    for commands in pm.hook.vethub_cli_commands():
        for command in commands or ():
            group.add_command(command)


def main() -> None:
    _add_plugin_commands(cli)
    cli()


if __name__ == "__main__":
    main()
