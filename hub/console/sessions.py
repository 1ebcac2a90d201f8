"""Console sign-in: email and password to a server-side session.

A console session is an API token row (:func:`hub.auth.issue_token`) whose plain value lives only
in the browser's HttpOnly cookie; the token's expiry, revocation and the suspended-practice check
are therefore the API's own (:func:`hub.auth.authenticate`). Signing out revokes the row.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub import audit
from hub.auth import (
    AuthError,
    Principal,
    authenticate,
    hash_password,
    hash_token,
    issue_token,
    verify_password,
)
from hub.console.lockout import Lockout
from hub.db.models import Account, ApiToken, Company, Practice, User
from hub.errors import DomainError

if TYPE_CHECKING:
    from hub.core import Hub

SESSION_HOURS = 12
# A wrong email costs the same scrypt work as a wrong password: timing tells nothing.
_DUMMY_HASH = hash_password("not-a-real-password")


@dataclass(frozen=True)
class Suspended:
    """Why a practice's users cannot sign in, and whom they should contact."""

    practice: str
    contacts: list[tuple[str, str | None]]  # (company name, company email)


class SignInRefused(DomainError):
    """A refused sign-in; ``suspended`` is set when the practice's access is suspended."""

    http_status = 401

    def __init__(self, message: str, *, code: str = "invalid_login", status: int = 401,
                 suspended: Suspended | None = None) -> None:
        super().__init__(message, code=code, status=status)
        self.suspended = suspended


async def suspension(session: AsyncSession, practice_id: int | None) -> Suspended | None:
    """The companies that suspended this practice, for the "whom to contact" message."""
    if practice_id is None:
        return None
    practice = await session.get(Practice, practice_id)
    rows = (await session.execute(
        select(Company.name, Company.email).join(Account, Account.company_id == Company.id)
        .where(Account.practice_id == practice_id).order_by(Company.name)
    )).all()
    return Suspended(practice.name if practice else "", [(n, e) for n, e in rows])


async def sign_in(session: AsyncSession, hub: Hub, lockout: Lockout, email: str, password: str) -> str:
    """Check the password and open a session; the plain session token is returned once."""
    now = hub.clock.now()
    email = email.strip()
    if lockout.locked_until(email, now) is not None:
        raise SignInRefused("too many failed sign-ins for this email; try again in 15 minutes",
                            code="locked_out", status=429)
    user = (await session.execute(
        select(User).where(func.lower(User.email) == email.lower()))).scalar_one_or_none()
    ok = verify_password(password, user.password_hash if user and user.password_hash else _DUMMY_HASH)
    if user is None or not user.is_active or not user.password_hash or not ok:
        if lockout.failed(email, now):
            await audit.record(session, "console", "user.locked_out", "user", user.id if user else None,
                               after={"email": email})
            raise SignInRefused("too many failed sign-ins for this email; try again in 15 minutes",
                                code="locked_out", status=429)
        raise SignInRefused("wrong email or password")
    try:
        token, row = await issue_token(
            session, role=user.role, company_id=user.company_id, practice_id=user.practice_id,
            user_id=user.id, name=user.email, expires_at=now + timedelta(hours=SESSION_HOURS))
    except AuthError as err:
        if err.code == "access_suspended":
            raise SignInRefused(err.message, code=err.code, status=403,
                                suspended=await suspension(session, user.practice_id)) from err
        raise SignInRefused(err.message, code=err.code, status=err.status) from err
    lockout.succeeded(email)
    await audit.record(session, f"user:{user.email}", "user.sign_in", "api_token", row.id,
                       company_id=user.company_id, practice_id=user.practice_id)
    return token


async def principal_for(session: AsyncSession, hub: Hub, token: str) -> Principal:
    """The session's caller, or :class:`SignInRefused` (expired, revoked, suspended)."""
    try:
        return await authenticate(session, token, hub.clock.now())
    except AuthError as err:
        suspended = None
        if err.code == "access_suspended":
            row = (await session.execute(
                select(ApiToken.practice_id).where(ApiToken.token_hash == hash_token(token)))).scalar()
            suspended = await suspension(session, row)
        raise SignInRefused(err.message, code=err.code, status=err.status, suspended=suspended) from err


async def sign_out(session: AsyncSession, hub: Hub, token: str) -> None:
    await session.execute(
        update(ApiToken).where(ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None))
        .values(revoked_at=hub.clock.now()).execution_options(synchronize_session=False))


def csrf_token(secret: str, session_token: str) -> str:
    """The form token bound to one session (or to the pre-sign-in cookie)."""
    return hmac.new(secret.encode(), f"csrf:{session_token}".encode(), "sha256").hexdigest()


def csrf_ok(secret: str, session_token: str, sent: str) -> bool:
    return bool(session_token) and hmac.compare_digest(csrf_token(secret, session_token), sent or "")

