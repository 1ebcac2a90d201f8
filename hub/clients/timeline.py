"""A client's timeline: everything that passed between the practice and the client, newest
first — communications with their status history, inbound replies, survey answers, loyalty
activity and preference changes.

Each source is read through an index on (client, time), at most one page from each, and the
pages merged; the cursor is the last item's (time, kind, id), so a page never repeats or skips
an item even when items share a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.clients.models import LoyaltyEntry, SurveyRequest
from hub.clients.search import Page, decode_cursor, encode_cursor
from hub.messaging.models import Communication, CommunicationStatus, ConsentRecord, InboundMessage


@dataclass(frozen=True)
class Source:
    """One kind of timeline entry: which table it comes from, how to filter it and render it."""
    kind: str
    model: Any
    at: Any
    client: Any
    extra: Callable[[Select[Any]], Select[Any]] | None
    render: Callable[[Any], dict[str, Any]]


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


SOURCES = (
    Source("communication", Communication, Communication.created_at, Communication.client_id, None,
           lambda c: {"channel": c.channel, "category": c.category, "template": c.template,
                      "status": c.status, "subject": c.subject, "address": c.address,
                      "verdict": c.verdict}),
    Source("inbound", InboundMessage, InboundMessage.received_at, InboundMessage.client_id, None,
           lambda m: {"channel": m.channel, "from": m.from_address, "body": m.body,
                      "communication_id": m.communication_id}),
    Source("survey_response", SurveyRequest, SurveyRequest.answered_at, SurveyRequest.client_id,
           lambda s: s.where(SurveyRequest.answered_at.is_not(None)),
           lambda s: {"rating": s.rating, "comment": s.comment, "visit": s.visit_external_id}),
    Source("loyalty", LoyaltyEntry, LoyaltyEntry.at, LoyaltyEntry.client_id, None,
           lambda e: {"entry": e.kind, "coins": e.coins, "reason": e.reason, "reward": e.reward,
                      "actor": e.actor}),
    Source("preference", ConsentRecord, ConsentRecord.at, ConsentRecord.client_id, None,
           lambda r: {"category": r.category, "channel": r.channel, "allowed": r.allowed,
                      "source": r.source, "actor": r.actor, "detail": r.detail,
                      "address": r.address}),
)


def _before(source: Source, cursor: list[Any] | None) -> Any:
    """Items of ``source`` that sort after the cursor (newest first: time, kind, id desc)."""
    if cursor is None:
        return None
    at, kind, ident = datetime.fromisoformat(cursor[0]), cursor[1], cursor[2]
    if source.kind < kind:
        return source.at <= at
    if source.kind > kind:
        return source.at < at
    return or_(source.at < at, and_(source.at == at, source.model.id < ident))


async def timeline(session: AsyncSession, client_id: int, *, cursor: str | None = None,
                   limit: int = 50) -> Page:
    after = decode_cursor(cursor, 3)
    found: list[tuple[datetime, str, int, Any, Source]] = []
    for source in SOURCES:
        stmt = select(source.model).where(source.client == client_id)
        if source.extra is not None:
            stmt = source.extra(stmt)
        condition = _before(source, after)
        if condition is not None:
            stmt = stmt.where(condition)
        stmt = stmt.order_by(source.at.desc(), source.model.id.desc()).limit(limit + 1)
        for row in (await session.execute(stmt)).scalars():
            found.append((getattr(row, source.at.key), source.kind, row.id, row, source))
    found.sort(key=lambda f: (f[0], f[1], f[2]), reverse=True)
    page, more = found[:limit], len(found) > limit
    history = await _history(session, [f[2] for f in page if f[1] == "communication"])
    items = []
    for at, kind, ident, row, source in page:
        item = {"kind": kind, "id": ident, "at": _iso(at), **source.render(row)}
        if kind == "communication":
            item["history"] = history.get(ident, [])
        items.append(item)
    nxt = encode_cursor([_iso(page[-1][0]), page[-1][1], page[-1][2]]) if more and page else None
    return Page(items, nxt)


async def _history(session: AsyncSession, ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    if not ids:
        return out
    rows = await session.execute(
        select(CommunicationStatus).where(CommunicationStatus.communication_id.in_(ids))
        .order_by(CommunicationStatus.at, CommunicationStatus.id))
    for s in rows.scalars():
        out.setdefault(s.communication_id, []).append(
            {"status": s.status, "at": _iso(s.at), "applied": s.applied,
             "provider_status": s.provider_status})
    return out
