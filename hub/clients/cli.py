"""``vethub clients find TEXT --practice SLUG``: the same search as the API, for operators."""

from __future__ import annotations

import sys
from typing import Any

import click
from sqlalchemy import select

from hub.cli_support import config_option, with_hub
from hub.clients import search
from hub.clients.details import display_name
from hub.db.models import Practice


@click.group("clients")
def clients_group() -> None:
    """Pet owners the PIMS sync stored."""


@clients_group.command("find")
@config_option
@click.argument("text")
@click.option("--practice", "practice_slug", default=None, help="Only this practice (slug).")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 200))
def find_command(config_path: str | None, text: str, practice_slug: str | None,
                 limit: int) -> None:
    """Find clients by name prefix, email, phone or PIMS id."""

    async def _go(hub: Any) -> list[tuple[Any, bool, str]]:
        async with hub.sessionmaker() as session:
            stmt = select(Practice).order_by(Practice.id)
            if practice_slug:
                stmt = stmt.where(Practice.slug == practice_slug)
            practices = list((await session.execute(stmt)).scalars())
            if not practices:
                raise click.ClickException(f"no practice with slug {practice_slug!r}")
            slugs = {p.id: p.slug for p in practices}
            page = await search.find_clients(session, list(slugs), text,
                                             region=practices[0].country or "US", limit=limit)
            owners = await search.active_patient_owners(session, page.items)
        return [(c, search.is_contactable(c, owners), slugs[c.practice_id]) for c in page.items]

    rows = with_hub(config_path, _go)
    if not rows:
        click.echo("no client found", err=True)
        sys.exit(1)
    for c, contactable, slug in rows:
        click.echo(f"{c.id}\t{slug}\t{c.external_id}\t{display_name(c)}\t{c.status}\t"
                   f"{c.email or '-'}\t{c.phone_mobile or '-'}\t"
                   f"{'contactable' if contactable else 'not contactable'}")
