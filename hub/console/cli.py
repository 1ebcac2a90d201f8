"""``vethub admin create-user``: a sign-in for any role, from the command line."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from hub.cli_support import config_option, with_hub

if TYPE_CHECKING:
    from hub.core import Hub


@click.command("create-user")
@config_option
@click.option("--role", type=click.Choice(["operator", "company_admin", "practice_staff"]), required=True,
              help="What the user may do and see in the console and the API.")
@click.option("--company", default=None, help="Company slug (company_admin).")
@click.option("--practice", default=None, help="Practice slug (practice_staff).")
@click.option("--email", required=True, help="The user's email; they sign in with it.")
@click.option("--name", default="", help="The user's name.")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from standard input (for scripts) instead of printing a link.")
def create_user_command(config_path: str | None, role: str, company: str | None, practice: str | None,
                        email: str, name: str, password_stdin: bool) -> None:
    """Create a console sign-in; prints a single-use set-password link unless --password-stdin.

    Example: vethub admin create-user --role operator --email you@example.com
    """
    from hub.auth import Principal
    from hub.console.users import create_user, resolve_tenant
    from hub.errors import DomainError

    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else None

    async def _go(hub: Hub) -> str | None:
        async with hub.transaction() as session:
            company_id, practice_id = await resolve_tenant(session, company, practice)
            _, link, _ = await create_user(session, hub, Principal("operator", name="cli"), role=role,
                                           email=email, name=name, company_id=company_id,
                                           practice_id=practice_id, password=password)
            return link

    try:
        link = with_hub(config_path, _go)
    except DomainError as err:
        click.echo(f"error: {err.message}", err=True)
        sys.exit(1)
    if link is None:
        click.echo(f"created {role} {email}; they can sign in at /console/sign-in")
    else:
        click.echo(f"created {role} {email}; send them this single-use link to set a password:")
        click.echo(link)
