"""Token expiry at its boundary and password checks (hub/auth.py), against surviving mutants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hub.auth import AuthError, authenticate, hash_password, issue_token, verify_password
from hub.db.models import User

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


async def test_a_token_is_expired_from_its_expiry_instant_on(hub) -> None:
    async with hub.transaction() as session:
        token, _ = await issue_token(session, role="operator", expires_at=NOW)
    async with hub.sessionmaker() as session:
        principal = await authenticate(session, token, NOW - timedelta(microseconds=1))
        assert principal.is_operator
        for at in (NOW, NOW + timedelta(seconds=1)):
            with pytest.raises(AuthError) as info:
                await authenticate(session, token, at)
            assert (info.value.status, info.value.code) == (401, "token_expired")


async def test_a_disabled_users_token_is_refused(hub) -> None:
    async with hub.transaction() as session:
        user = User(email="op@example.org", role="operator", is_active=True)
        session.add(user)
        await session.flush()
        token, _ = await issue_token(session, role="operator", user_id=user.id)
    async with hub.sessionmaker() as session:
        assert (await authenticate(session, token, NOW)).user_id == user.id
    async with hub.transaction() as session:
        (await session.get(User, user.id)).is_active = False
    async with hub.sessionmaker() as session:
        with pytest.raises(AuthError) as info:
            await authenticate(session, token, NOW)
    assert (info.value.status, info.value.code) == (401, "invalid_token")


@pytest.mark.parametrize("stored", [None, "", "plain-text-password", "md5$abc"])
def test_a_user_without_a_scrypt_hash_never_logs_in(stored: str | None) -> None:
    assert verify_password("plain-text-password", stored) is False
    assert verify_password("", stored) is False


def test_password_round_trip() -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("scrypt$16384$8$1$")
    assert verify_password("correct horse", stored) is True
    assert verify_password("correct horsf", stored) is False
