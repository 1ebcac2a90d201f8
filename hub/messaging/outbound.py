"""What other domains call to send a message.

Both functions record the communication with its contact verdict and, when the verdict allows,
enqueue the send job in the caller's transaction (idempotency key = communication id).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from hub.core import Hub
    from hub.messaging.models import Communication


async def queue_email(
    session: AsyncSession,
    hub: Hub,
    *,
    to: str,
    template: str,
    context: dict,
    category: str = "account",
    cc: Sequence[str] = (),
    practice_id: int | None = None,
    company_id: int | None = None,
    client_id: int | None = None,
) -> Communication:
    """Queue one email to an address (a practice, a company, a client).

    :param template: template name; files ``<name>.subject.j2``, ``<name>.txt.j2`` and
        optionally ``<name>.html.j2`` are looked up in the per-practice override dir, the dirs
        from ``vethub_template_dirs``, then ``hub/messaging/templates``.
    :returns: the Communication row (flushed, with its id, verdict and status).
    """
    raise NotImplementedError


async def queue_communication(
    session: AsyncSession,
    hub: Hub,
    *,
    client_id: int,
    template: str,
    category: str,
    channels: Sequence[str] = ("email", "sms", "postcard"),
    context: dict | None = None,
) -> Communication:
    """Queue a message to a client over the first channel in ``channels`` that the contact
    verdict allows; the send job falls back to the next channel on a permanent failure."""
    raise NotImplementedError
