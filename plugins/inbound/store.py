"""Storing an arrived message and its processing job in one transaction, before it is
acknowledged (the LMTP 250, the IMAP delete)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select

from .models import InboundEmail, InboundState
from .process import PROCESS_JOB

if TYPE_CHECKING:
    from hub.core import Hub


async def store(hub: Hub, raw: bytes, *, via: str, peer: str, mail_from: str, rcpt_to: list[str],
                max_bytes: int, source_key: str | None = None) -> int:
    """Keep ``raw`` (its first ``max_bytes``) and enqueue its processing; returns the row id.
    A ``source_key`` already stored returns that row's id and stores nothing."""
    async with hub.transaction() as session:
        if source_key is not None:
            known = (await session.execute(select(InboundEmail.id).where(
                InboundEmail.source_key == source_key))).scalar()
            if known is not None:
                return known
        row = InboundEmail(
            source_key=source_key,
            via=via, peer=peer[:255], mail_from=mail_from[:320], rcpt_to=list(rcpt_to),  # as given: a token's case matters
            size=len(raw), truncated=len(raw) > max_bytes, raw=raw[:max_bytes],
            state=InboundState.pending, received_at=hub.clock.now(), outcome={}, note="", flagged=False,
        )
        session.add(row)
        await session.flush()
        await hub.jobs.enqueue(session, PROCESS_JOB, {"id": row.id},
                               idempotency_key=f"inbound-email:{row.id}")
        return row.id
