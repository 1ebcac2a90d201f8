"""Operator events: what happened that an operator should be able to list and act on.

Every event is three traces of one fact: a row (``GET /api/events``, ``vethub events list``),
a structured log line (``event``, ``reason`` and the data as fields in ``--log-format json``)
and a Prometheus counter, ``vethub_events_total{kind, reason}``, to alert on.
docs/operator-guide.md lists every kind.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import Counter
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db.models import HubEvent
from hub.db.types import utcnow

log = logging.getLogger(__name__)

EVENTS = Counter("vethub_events_total", "Operator events recorded", ["kind", "reason"])


def trace(kind: str, message: str, *, reason: str | None = None, level: int = logging.INFO,
          data: dict[str, Any] | None = None, practice_id: int | None = None) -> None:
    """The log line and the counter of an event (also for a process with no database)."""
    fields = {"event": kind, "reason": reason or "", "practice_id": practice_id, **(data or {})}
    log.log(level, "%s: %s", kind, message, extra={"vethub": fields})
    EVENTS.labels(kind, reason or "").inc()


async def record(
    session: AsyncSession, kind: str, message: str, *, practice_id: int | None = None,
    data: dict[str, Any] | None = None, reason: str | None = None, level: int = logging.INFO,
) -> HubEvent:
    """Write an event in the caller's transaction, and log and count it.

    :param reason: a short fixed word for alerting (``disk``, ``max_attempts``); it becomes the
        ``reason`` label and ``data["reason"]``.
    """
    if reason is not None:
        data = {**(data or {}), "reason": reason}
    trace(kind, message, reason=reason or (data or {}).get("reason"), level=level, data=data,
          practice_id=practice_id)
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
