"""Users, API tokens and who may see what: the tenant scoping every API call goes through."""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, bindparam, or_, select, update
from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db.models import Account, AccountStatus, ApiToken, Practice, User
from hub.errors import DomainError

ROLES = ("operator", "company_admin", "practice_staff")
TOKEN_PREFIX = "vh_"
ACTIVE = AccountStatus.ACTIVE  # the account status that gives a company sight of a practice


class AuthError(DomainError):
    """A refused credential or role; its status is 401 or 403 by the case."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message, code=code, status=status)


@dataclass(frozen=True)
class Principal:
    """The caller of an API request, and the tenant it is scoped to."""

    role: str
    company_id: int | None = None
    practice_id: int | None = None
    user_id: int | None = None
    token_id: int | None = None
    name: str = ""

    @property
    def actor(self) -> str:
        return f"{self.role}:{self.name or self.token_id or self.user_id}"

    @property
    def is_operator(self) -> bool:
        return self.role == "operator"

    def tenant_params(self) -> dict[str, Any]:
        """The caller's ids as ``scope_company`` and ``scope_practice``: the parameters of the
        tenant conditions that list statements built once per role carry
        (:func:`hub.accounts.manage.scope`, :func:`hub.imaging.cases.visible_condition`)."""
        return {"scope_company": self.company_id, "scope_practice": self.practice_id}

    async def practice_ids(self, session: AsyncSession) -> list[int] | None:
        """Practices this caller may see; None means all (operator)."""
        if self.role == "operator":
            return None
        return await session.run_sync(lambda sync: self.practice_ids_on(sync.connection()))

    def practice_ids_on(self, conn: Connection) -> list[int] | None:
        """:meth:`practice_ids` read on a connection (inside :meth:`hub.core.Hub.read`)."""
        if self.role == "operator":
            return None
        if self.role == "practice_staff":
            return [self.practice_id] if self.practice_id is not None else []
        # a company sees a practice only while it holds an active account with it: after a
        # switch away, the practice is no longer the old company's to see or to write for
        rows = conn.execute(select(Account.practice_id).where(
            Account.company_id == self.company_id, Account.status == ACTIVE))
        return sorted({r[0] for r in rows})

    async def company_ids(self, session: AsyncSession) -> list[int] | None:
        """Companies this caller may see; None means all (operator)."""
        if self.role == "operator":
            return None
        if self.role == "company_admin":
            return [self.company_id] if self.company_id is not None else []
        rows = await session.execute(select(Account.company_id).where(Account.practice_id == self.practice_id))
        return sorted({r[0] for r in rows})

    async def can_access_practice(self, session: AsyncSession, practice_id: int) -> bool:
        ids = await self.practice_ids(session)
        return ids is None or practice_id in ids

    async def study_filter(self, session: AsyncSession) -> ColumnElement[bool] | None:
        """Which studies this caller may read; None means all (operator).

        The studies of practices it may see, and for a company also the studies of the cases
        routed to it: after a practice switches away, the old company keeps reading what was
        sent to it, and nothing received since."""
        from hub.imaging.models import Case, Study

        ids = await self.practice_ids(session)
        if ids is None:
            return None
        condition: ColumnElement[bool] = Study.practice_id.in_(ids)
        if self.role == "company_admin":
            routed = select(Case.study_id).where(Case.company_id == self.company_id)
            condition = or_(condition, Study.id.in_(routed))
        return condition

    async def can_read_study(self, session: AsyncSession, study_id: int) -> bool:
        from hub.imaging.models import Study

        condition = await self.study_filter(session)
        stmt = select(Study.id).where(Study.id == study_id)
        if condition is not None:
            stmt = stmt.where(condition)
        return (await session.execute(stmt)).first() is not None

    async def can_access_company(self, session: AsyncSession, company_id: int) -> bool:
        ids = await self.company_ids(session)
        return ids is None or company_id in ids


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def issue_token(
    session: AsyncSession, *, role: str, company_id: int | None = None, practice_id: int | None = None,
    user_id: int | None = None, name: str = "", expires_at: datetime | None = None,
) -> tuple[str, ApiToken]:
    """Create a token; the plain token is returned once and only its hash is stored."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    if role == "company_admin" and company_id is None:
        raise ValueError("a company_admin token needs a company")
    if role == "practice_staff" and practice_id is None:
        raise ValueError("a practice_staff token needs a practice")
    if role == "practice_staff":
        await ensure_practice_not_suspended(session, practice_id)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        token_hash=hash_token(token), prefix=token[:10], name=name, role=role, user_id=user_id,
        company_id=company_id if role == "company_admin" else None,
        practice_id=practice_id if role == "practice_staff" else None, expires_at=expires_at,
    )
    session.add(row)
    await session.flush()
    return token, row


# The token lookup runs on every API request: statements built once (SQLAlchemy caches their
# compiled form by identity), Core rows rather than ORM instances, and all of it in one
# synchronous function so that the web layer hands it to the database in one hop.
_TOKEN_BY_HASH = select(
    ApiToken.id, ApiToken.role, ApiToken.company_id, ApiToken.practice_id, ApiToken.user_id,
    ApiToken.name, ApiToken.revoked_at, ApiToken.expires_at,
).where(ApiToken.token_hash == bindparam("token_hash"))
_USER_ACTIVE = select(User.is_active).where(User.id == bindparam("user_id"))
_PRACTICE_EXISTS = select(Practice.id).where(Practice.id == bindparam("practice_id"))
_PRACTICE_APPROVED = select(Account.id).where(
    Account.practice_id == bindparam("practice_id"), Account.approved_for_access.is_(True)).limit(1)


def authenticate_on(conn: Connection, token: str, now: datetime) -> Principal:
    """The token's principal, read on ``conn``; :class:`AuthError` when it may not be used.

    Nothing is cached: a revoked or expired token, a disabled user or a suspended practice is
    refused from the next request on, in every process."""
    if not token.startswith(TOKEN_PREFIX):
        raise AuthError(401, "invalid_token", "the bearer token is not valid")
    row = conn.execute(_TOKEN_BY_HASH, {"token_hash": hash_token(token)}).first()
    if row is None or row.revoked_at is not None:
        raise AuthError(401, "invalid_token", "the bearer token is not valid")
    if row.expires_at is not None and row.expires_at <= now:
        raise AuthError(401, "token_expired", "the bearer token has expired")
    if row.user_id is not None and not conn.execute(_USER_ACTIVE, {"user_id": row.user_id}).scalar():
        raise AuthError(401, "invalid_token", "the token's user is disabled")
    if row.role == "practice_staff":
        _ensure_not_suspended(conn, row.practice_id)
    return Principal(row.role, row.company_id, row.practice_id, row.user_id, row.id, row.name)


async def authenticate(session: AsyncSession, token: str, now: datetime) -> Principal:
    """:func:`authenticate_on` within ``session``'s transaction (sign-in pages, DICOMweb)."""
    return await session.run_sync(lambda sync: authenticate_on(sync.connection(), token, now))


def _ensure_not_suspended(conn: Connection, practice_id: int | None) -> None:
    if practice_id is None or conn.execute(_PRACTICE_EXISTS, {"practice_id": practice_id}).first() is None:
        raise AuthError(401, "invalid_token", "the token's practice does not exist")
    if conn.execute(_PRACTICE_APPROVED, {"practice_id": practice_id}).first() is None:
        raise AuthError(403, "access_suspended",
                        "access for this practice is suspended; contact the company that serves you")


async def ensure_practice_not_suspended(session: AsyncSession, practice_id: int | None) -> None:
    """A practice none of whose accounts is approved for access may not log in or use tokens."""
    await session.run_sync(lambda sync: _ensure_not_suspended(sync.connection(), practice_id))


# --- logging in and out: plain services, shared by the API and the sign-in pages ---------------


async def login(session: AsyncSession, email: str, password: str, *, now: datetime,
                lifetime: timedelta) -> tuple[str, User]:
    """Email and password -> a bearer token that expires after ``lifetime``.

    An unknown email costs the same scrypt as a known one (verified against a dummy hash), so
    the answer's timing does not tell which emails have accounts."""
    user = (await session.execute(select(User).where(User.email == email.strip()))).scalar_one_or_none()
    stored = user.password_hash if user is not None and user.password_hash else _dummy_hash()
    ok = verify_password(password, stored)
    if user is None or not user.is_active or not user.password_hash or not ok:
        raise AuthError(401, "invalid_login", "wrong email or password")
    token, _ = await issue_token(session, role=user.role, company_id=user.company_id,
                                 practice_id=user.practice_id, user_id=user.id, name=user.email,
                                 expires_at=now + lifetime)
    return token, user


async def revoke_token(session: AsyncSession, token_id: int, now: datetime) -> bool:
    """Revoke one token; False when it does not exist or was already revoked."""
    result = await session.execute(
        update(ApiToken).where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None)).values(revoked_at=now)
        .execution_options(synchronize_session=False))
    return cast(CursorResult[Any], result).rowcount == 1


async def revoke_user_tokens(session: AsyncSession, user_id: int, now: datetime, *,
                             keep_token_id: int | None = None) -> int:
    """Revoke every live token of a user (but ``keep_token_id``): after a new password, say."""
    stmt = update(ApiToken).where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
    if keep_token_id is not None:
        stmt = stmt.where(ApiToken.id != keep_token_id)
    result = await session.execute(stmt.values(revoked_at=now).execution_options(synchronize_session=False))
    return cast(CursorResult[Any], result).rowcount


async def list_tokens(session: AsyncSession) -> list[ApiToken]:
    return list((await session.execute(select(ApiToken).order_by(ApiToken.id))).scalars())


# Passwords: scrypt from the standard library; parameters are stored with the hash.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${salt.hex()}${digest.hex()}"


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_hex(16))


def verify_password(password: str, stored: str | None) -> bool:
    if not stored or not stored.startswith("scrypt$"):
        return False
    _, n, r, p, salt, digest = stored.split("$")
    candidate = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), dklen=32, n=int(n), r=int(r), p=int(p))
    return hmac.compare_digest(candidate.hex(), digest)
