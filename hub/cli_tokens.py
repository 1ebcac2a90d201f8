"""``vethub admin list-tokens`` and ``revoke-token``, and the ``--expires`` lifetimes of
``create-token`` (kept apart from hub/cli.py, which other commands share)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import click

from hub.cli_support import config_option, with_hub
from hub.core import Hub

_LIFETIME = re.compile(r"^(\d{1,6})([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_expires(value: str | None, now: datetime) -> datetime | None:
    """``30d``, ``12h``, ``90m``, ``2w`` from now, or an ISO date/time; None for no expiry."""
    if value in (None, "", "never"):
        return None
    match = _LIFETIME.match(value.strip())
    if match:
        return now + timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("expected a lifetime such as 30d, 12h, 90m, 2w, or an ISO date") from None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    if when <= now:
        raise click.BadParameter("the expiry is in the past")
    return when


def register(admin: click.Group) -> None:
    admin.add_command(list_tokens)
    admin.add_command(revoke_token)


@click.command("list-tokens")
@config_option
def list_tokens(config_path: str | None) -> None:
    """List API tokens: id, prefix, role, tenant, name, expiry and whether revoked.

    Example: vethub admin list-tokens --config vethub.toml
    """
    from hub.auth import list_tokens as tokens

    async def _go(hub: Hub) -> None:
        now = hub.clock.now()
        async with hub.sessionmaker() as session:
            for t in await tokens(session):
                state = ("revoked" if t.revoked_at else
                         "expired" if t.expires_at and t.expires_at <= now else "live")
                tenant = f"company={t.company_id}" if t.company_id else f"practice={t.practice_id}" \
                    if t.practice_id else "-"
                expires = f"{t.expires_at:%Y-%m-%d %H:%M}" if t.expires_at else "never"
                click.echo(f"{t.id:>6} {t.prefix:<12} {t.role:<15} {tenant:<14} {state:<8} "
                           f"expires={expires} {t.name}")

    with_hub(config_path, _go)


@click.command("revoke-token")
@config_option
@click.argument("token_id", type=click.IntRange(min=1))
def revoke_token(config_path: str | None, token_id: int) -> None:
    """Revoke a token by its id (from list-tokens); requests with it then answer 401.

    Example: vethub admin revoke-token 12
    """
    from hub import audit
    from hub.auth import revoke_token as revoke

    async def _go(hub: Hub) -> bool:
        async with hub.transaction() as session:
            done = await revoke(session, token_id, hub.clock.now())
            if done:
                await audit.record(session, "cli", "revoke_token", "api_token", token_id)
            return done

    if not with_hub(config_path, _go):
        raise click.ClickException(f"no live token with id {token_id}")
    click.echo(f"revoked token {token_id}")
