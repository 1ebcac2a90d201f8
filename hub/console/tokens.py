"""Operators' view of API tokens and console sessions: list them, revoke one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from hub import audit, auth
from hub.auth import Principal
from hub.db.models import ApiToken
from hub.errors import Forbidden, NotFound

if TYPE_CHECKING:
    from hub.core import Hub


async def list_tokens(session: AsyncSession, by: Principal) -> list[dict[str, Any]]:
    if not by.is_operator:
        raise Forbidden("tokens are listed for operators")
    rows = reversed(await auth.list_tokens(session))  # newest first
    return [{"id": t.id, "prefix": t.prefix, "name": t.name, "role": t.role, "company_id": t.company_id,
             "practice_id": t.practice_id, "created_at": t.created_at.strftime("%Y-%m-%d %H:%M"),
             "expires_at": t.expires_at.strftime("%Y-%m-%d %H:%M") if t.expires_at else "",
             "state": "revoked" if t.revoked_at else "active",
             "kind": "console session" if t.user_id else "API token"} for t in rows]


async def revoke_token(session: AsyncSession, hub: Hub, by: Principal, token_id: int) -> None:
    if not by.is_operator:
        raise Forbidden("tokens are revoked by operators")
    row = await session.get(ApiToken, token_id)
    if row is None:
        raise NotFound.of("token")
    if row.revoked_at is not None:
        return
    await auth.revoke_token(session, token_id, hub.clock.now())
    await audit.record(session, by.actor, "api_token.revoke", "api_token", token_id,
                       company_id=row.company_id, practice_id=row.practice_id)
