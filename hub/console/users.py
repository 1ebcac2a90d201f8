"""Creating sign-ins: the CLI's ``admin create-user`` and the console's "Invite a colleague".

Who may create whom: an operator anyone; a company admin another admin of its own company; practice
staff another member of their own practice. The new user sets a password through the same single-use
link the welcome email carries (:func:`hub.accounts.onboarding.issue_password_link`).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub import audit
from hub.accounts.onboarding import issue_password_link
from hub.auth import ROLES, Principal, ensure_practice_not_suspended, hash_password
from hub.db.models import Company, Practice, User
from hub.errors import Conflict, Forbidden, Invalid, NotFound
from hub.messaging import links

if TYPE_CHECKING:
    from hub.core import Hub

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MIN_PASSWORD = 10


async def resolve_tenant(session: AsyncSession, company: str | None, practice: str | None
                         ) -> tuple[int | None, int | None]:
    """Slugs to ids; an unknown slug is refused by name."""
    company_id = practice_id = None
    if company:
        company_id = (await session.execute(select(Company.id).where(Company.slug == company))).scalar()
        if company_id is None:
            raise NotFound(f"no company with slug {company!r}", field="company")
    if practice:
        practice_id = (await session.execute(select(Practice.id).where(Practice.slug == practice))).scalar()
        if practice_id is None:
            raise NotFound(f"no practice with slug {practice!r}", field="practice")
    return company_id, practice_id


def _check_scope(by: Principal, role: str, company_id: int | None, practice_id: int | None) -> None:
    if by.is_operator:
        return
    if by.role == "company_admin" and role == "company_admin" and company_id == by.company_id:
        return
    if by.role == "practice_staff" and role == "practice_staff" and practice_id == by.practice_id:
        return
    raise Forbidden("you may invite colleagues of your own company or practice only", code="forbidden")


async def create_user(
    session: AsyncSession, hub: Hub, by: Principal, *, role: str, email: str, name: str = "",
    company_id: int | None = None, practice_id: int | None = None, password: str | None = None,
) -> tuple[User, str | None, datetime | None]:
    """Create a user; returns it and, unless a password was given, its set-password link."""
    email = email.strip()
    if role not in ROLES:
        raise Invalid(f"role is one of {', '.join(ROLES)}", field="role")
    if not _EMAIL.match(email) or len(email) > 320:
        raise Invalid("enter an email address like name@example.com", field="email")
    if role == "company_admin" and company_id is None:
        raise Invalid("a company admin needs a company", field="company")
    if role == "practice_staff" and practice_id is None:
        raise Invalid("practice staff need a practice", field="practice")
    if role == "practice_staff":
        await ensure_practice_not_suspended(session, practice_id)
    _check_scope(by, role, company_id, practice_id)
    if password is not None and len(password) < MIN_PASSWORD:
        raise Invalid(f"use at least {MIN_PASSWORD} characters", field="password")
    taken = (await session.execute(select(User.id).where(func.lower(User.email) == email.lower()))).first()
    if taken:
        raise Conflict(f"{email} already has a sign-in", code="email_in_use", field="email")
    user = User(email=email, name=name.strip()[:200], role=role,
                company_id=company_id if role == "company_admin" else None,
                practice_id=practice_id if role == "practice_staff" else None,
                password_hash=hash_password(password) if password is not None else None, is_active=True)
    session.add(user)
    await session.flush()
    await audit.record(session, by.actor, "user.create", "user", user.id,
                       after={"email": email, "role": role}, company_id=user.company_id,
                       practice_id=user.practice_id)
    if password is not None:
        return user, None, None
    sealed, expires_at = await issue_password_link(session, hub, user)
    # The link is shown once to whoever creates the user (printed, or on the inviter's page),
    # never stored: it is unsealed here, as a send would for an email.
    link = links.unseal(links.secret_of(hub), sealed)
    return user, link, expires_at


async def colleagues(session: AsyncSession, by: Principal) -> list[User]:
    """The users of the caller's own company or practice (an operator: all)."""
    stmt = select(User).order_by(User.email)
    if by.role == "company_admin":
        stmt = stmt.where(User.company_id == by.company_id)
    elif by.role == "practice_staff":
        stmt = stmt.where(User.practice_id == by.practice_id)
    return list((await session.execute(stmt)).scalars())
