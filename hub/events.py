"""Operator events: what happened that an operator should be able to list and act on."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db.models import HubEvent
from hub.db.types import utcnow

log = logging.getLogger(__name__)


async def record(
    session: AsyncSession, kind: str, message: str, *, practice_id: int | None = None,
    data: dict[str, Any] | None = None,
) -> HubEvent:
    log.info("%s: %s", kind, message)
    event = HubEvent(at=utcnow(), kind=kind, message=message, practice_id=practice_id, data=data)
    session.add(event)
    await session.flush()
    return event


async def list_events(session: AsyncSession, *, kind: str | None = None, practice_ids: list[int] | None = None,
                      limit: int = 200) -> list[HubEvent]:
    stmt = select(HubEvent).order_by(HubEvent.id.desc()).limit(limit)
    if kind:
        stmt = stmt.where(HubEvent.kind == kind)
    if practice_ids is not None:
        stmt = stmt.where(HubEvent.practice_id.in_(practice_ids))
    return list((await session.execute(stmt)).scalars())
