"""API tokens end: login tokens expire, logout and a new password revoke them, operators list and
revoke tokens from the CLI; login costs the same for unknown emails; rate limits believe
X-Forwarded-For only from a configured trusted proxy."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from datetime import timedelta

import pytest
from sqlalchemy import select

from hub.accounts.onboarding import issue_password_link
from hub.auth import AuthError, authenticate, hash_password
from hub.config import load_config
from hub.core import create_hub
from hub.db.models import ApiToken, User
from hub.messaging import links

from .accounts_world import World, add_practice

PASSWORD = "correct horse battery"


async def staff_user(world: World, email: str = "ada@elm.example", password: str | None = PASSWORD) -> int:
    pid, _ = await add_practice(world.hub, "elm-vets", {world.companies["read-right"]: ["DX"]})
    async with world.hub.transaction() as s:
        user = User(email=email, name="Ada", role="practice_staff", practice_id=pid, is_active=True,
                    password_hash=hash_password(password) if password else None)
        s.add(user)
        await s.flush()
        return user.id


async def login(world: World, email: str = "ada@elm.example", password: str = PASSWORD):
    return await world.api.post("/api/login", json={"email": email, "password": password})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_login_tokens_expire_and_logout_revokes(world: World) -> None:
    await staff_user(world)
    body = await (await login(world)).json()
    assert body["expires_at"]
    assert (await world.api.get("/api/whoami", headers=bearer(body["token"]))).status == 200
    world.clock.advance(hours=12)
    r = await world.api.get("/api/whoami", headers=bearer(body["token"]))
    assert r.status == 401 and (await r.json())["error"]["code"] == "token_expired"

    other = (await (await login(world)).json())["token"]
    assert (await world.api.post("/api/logout", headers=bearer(other))).status == 204
    assert (await world.api.get("/api/whoami", headers=bearer(other))).status == 401


async def test_a_new_password_revokes_the_users_tokens(world: World) -> None:
    user_id = await staff_user(world)
    stolen = (await (await login(world)).json())["token"]
    async with world.hub.transaction() as s:
        link, _ = await issue_password_link(s, world.hub, await s.get(User, user_id))
    token = links.unseal(links.secret_of(world.hub), link).split("token=", 1)[1]
    r = await world.api.post("/api/password", json={"token": token, "password": "a brand new passphrase"})
    assert r.status == 200, await r.text()
    assert (await world.api.get("/api/whoami", headers=bearer(stolen))).status == 401
    assert (await login(world, password="a brand new passphrase")).status == 200


async def test_login_costs_one_scrypt_whoever_asks(world: World, monkeypatch) -> None:
    await staff_user(world)
    await staff_user_no_password(world)
    calls: list[int] = []
    real = hashlib.scrypt

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    await login(world, email="nobody@elm.example")  # warm the dummy hash (made once per process)
    monkeypatch.setattr(hashlib, "scrypt", counting)
    for email, password in (("nobody@elm.example", PASSWORD), ("ada@elm.example", "wrong password!"),
                            ("bob@elm.example", PASSWORD)):
        calls.clear()
        r = await login(world, email=email, password=password)
        assert r.status == 401 and (await r.json())["error"]["code"] == "invalid_login"
        assert len(calls) == 1, email


async def staff_user_no_password(world: World) -> None:
    async with world.hub.transaction() as s:
        pid = (await s.execute(select(User.practice_id).where(User.email == "ada@elm.example"))).scalar()
        s.add(User(email="bob@elm.example", name="Bob", role="practice_staff", practice_id=pid, is_active=True))


@pytest.mark.parametrize("trusted", [False, True], ids=["no-proxy", "trusted-proxy"])
async def test_forwarded_for_believed_only_from_a_trusted_proxy(world_factory, trusted) -> None:
    world = await world_factory(http={"trusted_proxies": ["127.0.0.0/8"] if trusted else []})

    async def request(client_ip: str) -> int:
        r = await world.api.post("/api/account-requests", json={"practice_name": "x"},
                                 headers={"X-Forwarded-For": f"198.51.100.9, {client_ip}"})
        return r.status

    assert [await request("203.0.113.1") for _ in range(5)] == [201] * 5
    assert await request("203.0.113.1") == 429
    # another client behind the proxy has its own budget; without a trusted proxy the header
    # is the client's own words and changes nothing
    assert await request("203.0.113.2") == (201 if trusted else 429)


async def test_cli_expiry_list_and_revoke(write_config, tmp_path) -> None:
    path = write_config({"companies": [{"slug": "rads-a", "name": "Rads A"}]})

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "hub.cli", *args, "--config", str(path)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)

    assert cli("db", "upgrade").returncode == 0
    made = cli("admin", "create-token", "--role", "operator", "--name", "ci", "--expires", "1h")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    assert cli("admin", "create-token", "--role", "operator", "--expires", "soon").returncode != 0
    listed = cli("admin", "list-tokens")
    [line] = [ln for ln in listed.stdout.splitlines() if token[:10] in ln]
    assert " live " in line and "expires=" in line and "never" not in line

    hub = create_hub(load_config(path))
    await hub.start(lifecycle=False)
    try:
        async with hub.sessionmaker() as s:
            row = (await s.execute(select(ApiToken).where(ApiToken.prefix == token[:10]))).scalar_one()
            assert (await authenticate(s, token, hub.clock.now())).role == "operator"
            with pytest.raises(AuthError, match="expired"):
                await authenticate(s, token, hub.clock.now() + timedelta(hours=1, seconds=1))
        revoked = cli("admin", "revoke-token", str(row.id))
        assert revoked.returncode == 0, revoked.stderr
        async with hub.sessionmaker() as s:
            with pytest.raises(AuthError):
                await authenticate(s, token, hub.clock.now())
    finally:
        await hub.stop()
    assert " revoked " in [ln for ln in cli("admin", "list-tokens").stdout.splitlines() if token[:10] in ln][0]
    assert cli("admin", "revoke-token", str(row.id)).returncode != 0
