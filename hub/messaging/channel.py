"""The channel protocol: what an email, SMS or postcard plugin implements.

A channel plugin implements the hook ``vethub_channels(hub) -> list[Channel]``. A channel that is
not configured (no section, or no credentials) returns ``[]``; the core then logs
"<name> channel off: ...". The core builds an :class:`OutboundMessage` per communication, calls
``send`` from the outbox job, and maps :class:`ChannelError` to a retry or a final failure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from aiohttp import web

__all__ = [
    "CHANNEL_ERROR_REASONS",
    "Channel",
    "ChannelError",
    "OutboundMessage",
    "SendResult",
    "Sender",
]


@dataclass(frozen=True)
class Sender:
    """Who a client's message comes from: its practice (see :mod:`hub.clients.sender`).

    Channels show ``display_name`` as the sender; email also uses ``from_address`` (None: the
    channel's own), ``reply_to`` and, with a ``from_address`` on the practice's own domain,
    that domain's DKIM key (``dkim_domain``, ``dkim_selector``, ``dkim_key``).
    """

    display_name: str
    from_address: str | None = None
    reply_to: str | None = None
    dkim_domain: str | None = None
    dkim_selector: str | None = None
    dkim_key: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class OutboundMessage:
    """One rendered message for one recipient over one channel."""

    communication_id: int
    channel: str  # "email" | "sms" | "postcard"
    category: str  # reminder, appointment, survey, loyalty, marketing, account
    to: str  # email address, E.164 phone, or "" for postcards
    cc: tuple[str, ...]
    subject: str | None
    text: str | None  # email text part / SMS body
    html: str | None  # email HTML part
    postcard_front_html: str | None
    postcard_back_html: str | None
    # name, address_line1, address_line2, address_city, address_state, address_zip, address_country
    postal_address: dict | None
    headers: dict[str, str]  # extra email headers (List-Unsubscribe...)
    practice_id: int | None
    idempotency_key: str  # str(communication_id) -- use as provider idempotency key
    #: the practice the message comes from; None: the hub's own identity
    sender: Sender | None = None


@dataclass(frozen=True)
class SendResult:
    """What the provider said. ``status`` is the hub status after the send: "sent" (SMTP
    accepted), "queued" (Twilio), "processed" (Lob) ..."""

    provider_id: str | None
    status: str
    detail: dict = field(default_factory=dict)


CHANNEL_ERROR_REASONS = frozenset({"invalid_address", "opted_out", "bounced", "rejected", "transient"})


class ChannelError(Exception):
    """A send failed.

    :param reason: "invalid_address" | "opted_out" | "bounced" | "rejected" | "transient".
    :param permanent: True when retrying cannot help (the job goes dead, the communication
        becomes failed/bounced); False to retry with backoff.
    :param code: the provider's error code (SMTP reply code, Twilio code, Lob code), if any.
    :param retry_after: seconds the provider asked us to wait, if it said.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        permanent: bool,
        code: int | str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        if reason not in CHANNEL_ERROR_REASONS:
            raise ValueError(f"unknown ChannelError reason {reason!r}")
        self.message = message
        self.reason = reason
        self.permanent = permanent
        self.code = code
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return (
            f"ChannelError({self.message!r}, reason={self.reason!r}, "
            f"permanent={self.permanent!r}, code={self.code!r})"
        )


@runtime_checkable
class Channel(Protocol):
    """A delivery channel. Methods are async; the hook that returns channels is synchronous."""

    name: str  # "email" | "sms" | "postcard"

    async def send(self, message: OutboundMessage) -> SendResult: ...

    def routes(self) -> list[web.RouteDef]:
        """Webhook routes (status callbacks, inbound replies), mounted outside /api."""
        ...

    async def health(self) -> tuple[bool, str]: ...

    async def close(self) -> None: ...
