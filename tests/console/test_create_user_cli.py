"""``vethub admin create-user``: a set-password link, or a password from stdin; refusals by name."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import select

from hub.accounts.onboarding import set_password
from hub.auth import verify_password
from hub.config import load_config
from hub.core import create_hub
from hub.db.models import AuditEntry, User

COMPANIES = {"companies": [{"slug": "read-right", "name": "ReadRight", "email": "a@rr.example"}]}


def _cli(path: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hub.cli", "admin", "create-user", "--config", str(path), *args],
                          cwd=path.parent, input=stdin, capture_output=True, text=True, timeout=300)


async def _in_process(path: Path, *args: str, stdin: str | None = None) -> Any:
    """The same command through click's runner, in a thread (it runs its own event loop): the
    refusals need no new interpreter each."""
    from click.testing import CliRunner

    from hub.cli import cli

    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, cli, ["admin", "create-user", "--config", str(path), *args],
                                   input=stdin)


async def test_create_user_link_or_stdin_password(write_config: Any, tmp_path: Path) -> None:
    path = write_config(COMPANIES)
    upgraded = subprocess.run([sys.executable, "-m", "hub.cli", "db", "upgrade", "--config", str(path)],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert upgraded.returncode == 0, upgraded.stderr

    first = _cli(path, "--role", "operator", "--email", "ops@vethub.example")
    assert first.returncode == 0, first.stderr
    link = first.stdout.strip().splitlines()[-1]
    assert urlsplit(link).path == "/set-password"
    scripted = await _in_process(path, "--role", "company_admin", "--company", "read-right",
                                 "--email", "admin@rr.example", "--password-stdin", stdin="a strong password\n")
    assert scripted.exit_code == 0, scripted.output
    assert "/set-password" not in scripted.output

    for args, message in (
        (("--role", "practice_staff", "--email", "x@y.example"), "practice staff need a practice"),
        (("--role", "company_admin", "--company", "nope", "--email", "x@y.example"), "no company with slug 'nope'"),
        (("--role", "operator", "--email", "OPS@vethub.example"), "already has a sign-in"),
        (("--role", "operator", "--email", "not-an-email"), "email address"),
    ):
        bad = await _in_process(path, *args)
        assert bad.exit_code == 1 and message in bad.output, (args, bad.output)
    short = await _in_process(path, "--role", "operator", "--email", "o2@vethub.example", "--password-stdin",
                              stdin="short\n")
    assert short.exit_code == 1 and "at least 10 characters" in short.output

    hub = create_hub(load_config(path))
    await hub.start(lifecycle=False)
    try:
        async with hub.transaction() as s:
            await set_password(s, hub, parse_qs(urlsplit(link).query)["token"][0], "operator password 1")
        async with hub.sessionmaker() as s:
            users = {u.email: u for u in (await s.execute(select(User))).scalars()}
            assert set(users) == {"ops@vethub.example", "admin@rr.example"}
            assert verify_password("operator password 1", users["ops@vethub.example"].password_hash)
            assert verify_password("a strong password", users["admin@rr.example"].password_hash)
            assert users["admin@rr.example"].company_id is not None
            audited = (await s.execute(select(AuditEntry).where(AuditEntry.action == "user.create"))).scalars().all()
            assert len(audited) == 2
    finally:
        await hub.stop()
