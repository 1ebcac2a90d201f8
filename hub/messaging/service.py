"""Services that channel webhooks call: statuses, inbound replies, opt-outs, invalid addresses.

Services take a session and only flush; the caller's transaction commits.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from hub.core import Hub
    from hub.messaging.models import InboundMessage


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
) -> bool:
    """Append a status history row for the communication sent with ``provider_id`` on
    ``channel`` and move its status forward (never backward).

    :returns: True when the communication's status changed; False for a duplicate or a
        backward/out-of-order status (history only) or an unknown provider id.
    """
    raise NotImplementedError


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
) -> InboundMessage:
    """Store an inbound reply, matched to the client by phone (E.164) or email and linked to
    the latest communication sent to that address."""
    raise NotImplementedError


async def set_address_opt_out(
    session: AsyncSession,
    hub: Hub,
    *,
    kind: str,
    address: str,
    opted_out: bool,
    source: str,
    detail: str = "",
) -> None:
    """Record an opt-out (or opt back in) against an address.

    :param kind: "email" | "sms" | "postal".
    :param source: sms_keyword, one_click, bounce, preference_page, staff, pims ...
    """
    raise NotImplementedError


async def mark_address_invalid(
    session: AsyncSession, hub: Hub, *, kind: str, address: str, reason: str, source: str
) -> None:
    """Suppress an address as invalid (hard bounce, Twilio 21211...) and raise an operator event."""
    raise NotImplementedError
