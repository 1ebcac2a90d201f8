"""The audit log: every write through the API or the CLI, with who, what, when, before/after."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from hub.db.models import AuditEntry
from hub.db.types import utcnow


async def record(
    session: AsyncSession,
    actor: str,
    action: str,
    entity: str,
    entity_id: Any = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    *,
    company_id: int | None = None,
    practice_id: int | None = None,
) -> AuditEntry:
    entry = AuditEntry(
        at=utcnow(), actor=actor, action=action, entity=entity,
        entity_id=None if entity_id is None else str(entity_id),
        before=before, after=after, company_id=company_id, practice_id=practice_id,
    )
    session.add(entry)
    await session.flush()
    return entry
