"""Services that channel webhooks call: statuses, inbound replies, opt-outs, invalid addresses.

Services take a session and only flush; the caller's transaction commits.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from hub import events
from hub.messaging import statuses
from hub.messaging.addresses import normalise, postal_key
from hub.messaging.models import (
    AddressSuppression,
    Communication,
    CommunicationStatus,
    ConsentRecord,
    InboundMessage,
)
from hub.messaging.statuses import CommStatus

if TYPE_CHECKING:
    from hub.core import Hub

log = logging.getLogger(__name__)

KIND_TO_CHANNEL = {"email": "email", "sms": "sms", "postal": "postcard"}
CHANNEL_TO_KIND = {"email": "email", "sms": "sms", "postcard": "postal"}


def _norm(kind: str, address: str) -> str:
    if kind not in KIND_TO_CHANNEL:
        raise ValueError(f"unknown address kind {kind!r}; expected email, sms or postal")
    if kind == "postal" and not address.startswith("postal:"):
        return address  # callers pass postal_key(...) already; keep what they gave
    return normalise(kind, address)


async def apply_status(
    session: AsyncSession, hub: Hub, comm: Communication, status: str, *,
    provider_status: str | None = None, at: datetime | None = None, detail: dict | None = None,
) -> bool:
    """Append a history row and move ``comm.status`` forward only. Returns True if it moved."""
    now = hub.clock.now()
    moved = statuses.is_forward(comm.status, status)
    session.add(CommunicationStatus(
        communication_id=comm.id, status=status, provider_status=provider_status, applied=moved,
        at=at or now, detail=detail,
    ))
    if moved:
        comm.status = status
        comm.updated_at = now
    await session.flush()
    if moved and status == CommStatus.RETURNED_TO_SENDER and comm.channel == "postcard" and comm.postal_address:
        # the post office could not deliver to this address: do not spend money on it again
        await mark_address_invalid(session, hub, kind="postal", address=postal_key(comm.postal_address),
                                   reason="returned to sender", source="bounce")
    if moved:
        await hub.fire("vethub_delivery_status", hub=hub, communication=comm, status=status)
    return moved


async def record_status(
    session: AsyncSession,
    hub: Hub,
    *,
    channel: str,
    provider_id: str,
    status: str,
    provider_status: str,
    at: datetime | None = None,
    detail: dict | None = None,
    communication_id: int | None = None,
) -> bool:
    """Append a status history row for the communication sent with ``provider_id`` on
    ``channel`` and move its status forward (never backward).

    ``communication_id`` (carried in the callback URL by channels that can) covers a callback
    that outruns the send job: the provider answered and called back before the job stored
    the provider id. Then the communication is found by id and the provider id recorded.

    :returns: True when the communication's status changed; False for a duplicate or a
        backward/out-of-order status (history only) or an unknown provider id.
    """
    comm = (await session.execute(
        select(Communication).where(Communication.channel == channel, Communication.provider_id == provider_id)
        .order_by(Communication.id.desc()).limit(1)
    )).scalar_one_or_none()
    if comm is None and communication_id is not None:
        candidate = await session.get(Communication, communication_id)
        if candidate is not None and candidate.channel == channel and candidate.provider_id in (None, provider_id):
            candidate.provider_id = provider_id
            comm = candidate
    if comm is None:
        log.info("%s status %s for unknown provider id %s", channel, status, provider_id)
        return False
    return await apply_status(session, hub, comm, status, provider_status=provider_status, at=at, detail=detail)


async def _client_for_address(
    session: AsyncSession, kind: str, address: str, *,
    only: Collection[int] | None = None, exclude: Collection[int] = (),
) -> tuple[int | None, int | None, int | None]:
    """(client_id, practice_id, latest communication id) for an address, from what we sent,
    else from the PIMS; (None, None, None) when unknown or **ambiguous**: a reply is never
    credited to one practice when several (among ``only``, minus ``exclude``) reached or
    know that address."""
    channel = KIND_TO_CHANNEL[kind]
    scope = [] if only is None else [Communication.practice_id.in_(list(only))]
    if exclude:
        scope.append(Communication.practice_id.not_in(list(exclude)))
    sent = (await session.execute(
        select(Communication.client_id, Communication.practice_id, Communication.id)
        .where(Communication.channel == channel, Communication.address == address, *scope)
        .order_by(Communication.id.desc())
    )).all()
    if len({row.practice_id for row in sent}) > 1:
        return None, None, None
    if sent:
        row = sent[0]
        return row.client_id, row.practice_id, row.id
    if kind in ("sms", "email"):
        try:
            from hub.messaging.facts import pims_models

            Client, _ = pims_models()
        except Exception:  # noqa: BLE001 - no PIMS domain: nothing to match against
            return None, None, None
        # the PIMS sync stores phones as E.164 and emails as given: compare accordingly
        names = ("phone_mobile", "phone_home", "phone_work") if kind == "sms" else ("email",)
        where = [] if only is None else [Client.practice_id.in_(list(only))]
        if exclude:
            where.append(Client.practice_id.not_in(list(exclude)))
        for name in names:
            column = getattr(Client, name, None)
            if column is None:
                continue
            match = column == address if kind == "sms" else func.lower(column) == address
            hits = (await session.execute(
                select(Client.id, Client.practice_id).where(match, *where)
                .order_by(Client.id.desc()))).all()
            if len({hit.practice_id for hit in hits}) > 1:
                return None, None, None
            if hits:
                return hits[0].id, hits[0].practice_id, None
    return None, None, None


async def first_attempt_at(session: AsyncSession, communication_id: int) -> datetime | None:
    """When the first send attempt of a communication started, as far as the hub knows: its
    earliest "sending" row, else its creation time (never later than the first attempt, so a
    provider's time-limited idempotency key is taken for expired no later than it is)."""
    first = (await session.execute(
        select(func.min(CommunicationStatus.at)).where(
            CommunicationStatus.communication_id == communication_id,
            CommunicationStatus.status == CommStatus.SENDING))).scalar()
    created = (await session.execute(select(Communication.created_at).where(
        Communication.id == communication_id))).scalar()
    known = [t for t in (first, created) if t is not None]
    return min(known) if known else None


async def inbound_seen(session: AsyncSession, provider_id: str | None) -> bool:
    """Whether an inbound message with this provider id was already recorded (a replay)."""
    if not provider_id:
        return False
    return (await session.execute(select(InboundMessage.id).where(
        InboundMessage.provider_id == provider_id))).first() is not None


async def practice_ids_by_slug(session: AsyncSession, slugs: Collection[str]) -> dict[str, int]:
    """The ids of the practices with these slugs (unknown slugs are left out)."""
    from hub.db.models import Practice

    if not slugs:
        return {}
    rows = await session.execute(select(Practice.slug, Practice.id).where(
        Practice.slug.in_(list(slugs))))
    return {slug: pid for slug, pid in rows}


async def record_inbound(
    session: AsyncSession,
    hub: Hub,
    *,
    channel: str,
    from_address: str,
    to_address: str,
    body: str,
    provider_id: str | None,
    raw: dict[str, Any],
    only: Collection[int] | None = None,
    exclude: Collection[int] = (),
    communication_id: int | None = None,
) -> InboundMessage:
    """Store an inbound reply, matched to the client by phone (E.164) or email and linked to
    the latest communication sent to that address. A repeated provider id returns the stored row.

    ``only``/``exclude`` narrow the practices the reply can belong to (the channel knows which
    sender it reached). When it stays ambiguous, the reply is stored unassigned and an
    operator event says so: it is shown to no practice rather than to the wrong one.

    ``communication_id``: the channel matched the reply to the message it answers (an email's
    reply token or In-Reply-To); it belongs to that message's client and practice."""
    if provider_id:
        existing = (await session.execute(
            select(InboundMessage).where(InboundMessage.provider_id == provider_id)
        )).scalar_one_or_none()
        if existing is not None:
            return existing
    kind = CHANNEL_TO_KIND.get(channel, channel)
    address = _norm(kind, from_address) if kind in KIND_TO_CHANNEL else from_address
    answered = await session.get(Communication, communication_id) if communication_id else None
    client_id: int | None
    practice_id: int | None
    comm_id: int | None
    if answered is not None:
        client_id, practice_id, comm_id = answered.client_id, answered.practice_id, answered.id
    else:
        client_id, practice_id, comm_id = await _client_for_address(
            session, kind, address, only=only, exclude=exclude)
    msg = InboundMessage(
        channel=channel, from_address=address, to_address=to_address, body=body,
        provider_id=provider_id, client_id=client_id, practice_id=practice_id,
        communication_id=comm_id, raw=raw, received_at=hub.clock.now(),
    )
    session.add(msg)
    await session.flush()
    if practice_id is None:
        await events.record(
            session, "messaging.inbound_unassigned",
            f"{channel} reply {msg.id} from {address} could not be attributed to one practice",
            practice_id=None, data={"inbound_id": msg.id, "channel": channel,
                                    "to_address": to_address})
    return msg


async def _upsert_suppression(
    session: AsyncSession, hub: Hub, *, kind: str, address: str, reason: str, active: bool,
    source: str, detail: str,
) -> None:
    now = hub.clock.now()
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = insert(AddressSuppression).values(
        kind=kind, address=address, reason=reason, source=source, detail=detail, active=active,
        created_at=now, updated_at=now,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["kind", "address", "reason"],
        set_={"active": active, "source": source, "detail": detail, "updated_at": now},
    )
    await session.execute(stmt)


async def set_address_opt_out(
    session: AsyncSession,
    hub: Hub,
    *,
    kind: str,
    address: str,
    opted_out: bool,
    source: str,
    detail: str = "",
    only: Collection[int] | None = None,
    exclude: Collection[int] = (),
) -> None:
    """Record an opt-out (or opt back in) against an address, for every category.

    :param kind: "email" | "sms" | "postal".
    :param source: sms_keyword, one_click, bounce, preference_page, staff, pims ...
    """
    address = _norm(kind, address)
    await _upsert_suppression(session, hub, kind=kind, address=address, reason="opt_out",
                              active=opted_out, source=source, detail=detail)
    client_id, practice_id, _ = await _client_for_address(session, kind, address, only=only,
                                                          exclude=exclude)
    session.add(ConsentRecord(
        client_id=client_id, practice_id=practice_id, address=address, category="*",
        channel=KIND_TO_CHANNEL[kind], allowed=not opted_out, source=source, actor=None,
        detail=detail, at=hub.clock.now(),
    ))
    await session.flush()


async def mark_address_invalid(
    session: AsyncSession, hub: Hub, *, kind: str, address: str, reason: str, source: str
) -> None:
    """Suppress an address as invalid (hard bounce, Twilio 21211...) and raise an operator event.

    Idempotent: an address already marked invalid gets no second ledger row or event (several
    channels, or a webhook and the send job, may report the same bounce; one alert per address,
    not one per report).
    """
    address = _norm(kind, address)
    already = (await session.execute(
        select(AddressSuppression.id).where(
            AddressSuppression.kind == kind, AddressSuppression.address == address,
            AddressSuppression.reason == "invalid", AddressSuppression.active.is_(True))
    )).first()
    if already is not None:
        return
    await _upsert_suppression(session, hub, kind=kind, address=address, reason="invalid",
                              active=True, source=source, detail=reason)
    client_id, practice_id, comm_id = await _client_for_address(session, kind, address)
    session.add(ConsentRecord(
        client_id=client_id, practice_id=practice_id, address=address, category="*",
        channel=KIND_TO_CHANNEL[kind], allowed=False, source=source, actor=None,
        detail=f"invalid: {reason}", at=hub.clock.now(),
    ))
    await events.record(
        session, "messaging.address_invalid",
        f"{kind} address {address} marked invalid ({source}): {reason}",
        practice_id=practice_id,
        data={"kind": kind, "address": address, "reason": reason, "source": source,
              "client_id": client_id, "communication_id": comm_id},
    )


async def record_complaint(
    session: AsyncSession, hub: Hub, *, address: str, provider: str, detail: str = "",
    communication_id: int | None = None, category: str = "marketing",
) -> None:
    """A mailbox provider's complaint (an ARF report): no more ``category`` mail to that person
    on email, ledger source ``provider``. Credited to the client of the reported message, else
    to whoever the address belongs to; with nobody known, the address itself is opted out."""
    comm = await session.get(Communication, communication_id) if communication_id else None
    address = _norm("email", comm.address if comm is not None and not address else address)
    client_id: int | None
    practice_id: int | None
    if comm is not None and comm.client_id is not None:
        client_id, practice_id = comm.client_id, comm.practice_id
    else:
        client_id, practice_id, _ = await _client_for_address(session, "email", address)
    note = f"complaint about {address} via {provider}" + (f": {detail}" if detail else "")
    if client_id is None:
        await set_address_opt_out(session, hub, kind="email", address=address, opted_out=True,
                                  source="provider", detail=note)
        return
    # no address on the row: the preference ledger reads only client rows (see facts.load_consent)
    session.add(ConsentRecord(
        client_id=client_id, practice_id=practice_id, address=None, category=category,
        channel="email", allowed=False, source="provider", actor=provider[:200], detail=note,
        at=hub.clock.now(),
    ))
    await session.flush()


async def record_consent(
    session: AsyncSession, hub: Hub, *, client_id: int, category: str, channel: str,
    allowed: bool, source: str, actor: str | None = None, detail: str = "",
    practice_id: int | None = None,
) -> ConsentRecord:
    """Append one consent ledger row for a client (staff edit, preference page, PIMS flag)."""
    row = ConsentRecord(
        client_id=client_id, practice_id=practice_id, address=None, category=category,
        channel=channel, allowed=allowed, source=source, actor=actor, detail=detail,
        at=hub.clock.now(),
    )
    session.add(row)
    await session.flush()
    return row


def postal_suppression_address(postal: dict | None) -> str:
    """The key under which a mailing address is suppressed (``kind="postal"``): pass it as the
    ``address`` of :func:`mark_address_invalid` or :func:`set_address_opt_out`."""
    return postal_key(postal)
