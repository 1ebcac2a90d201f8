"""The LMTP listener the operator's MTA delivers to (aiosmtpd).

Each message is stored, with its processing job, before the 250 is answered: a hub killed
after that has the message; one killed before it never said 250, so the MTA delivers again.
LMTP answers DATA once per recipient (RFC 2033); every recipient gets the same answer, since
the message is stored once for all of them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from aiosmtpd.lmtp import LMTP

from .config import InboundConfig
from .store import store

if TYPE_CHECKING:
    from hub.core import Hub

log = logging.getLogger(__name__)


class InboundHandler:
    """aiosmtpd handler: accept any recipient, store the message, answer per recipient."""

    def __init__(self, hub: Hub, config: InboundConfig) -> None:
        self.hub, self.config = hub, config

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        raw = raw if isinstance(raw, bytes) else str(raw).encode("utf-8", "surrogateescape")
        peer = session.peer
        peer_text = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "")
        try:
            ident = await store(self.hub, raw, via="lmtp", peer=peer_text,
                                mail_from=envelope.mail_from or "", rcpt_to=list(envelope.rcpt_tos),
                                max_bytes=self.config.max_bytes)
        except Exception:
            log.exception("could not store an inbound message from %s", peer_text)
            answer = "451 4.3.0 the message could not be stored; try again later"
        else:
            log.info("inbound email %s stored (%d bytes, from <%s>)", ident, len(raw), envelope.mail_from)
            answer = f"250 2.0.0 stored as {ident}"
        return "\r\n".join(answer for _ in envelope.rcpt_tos) or answer


class LmtpListener:
    """The LMTP server the MTA delivers to; stores each message before answering 250."""
    def __init__(self, hub: Hub, config: InboundConfig) -> None:
        self.hub, self.config = hub, config
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        handler = InboundHandler(self.hub, self.config)
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: LMTP(handler, data_size_limit=self.config.refuse_bytes, decode_data=False,
                         ident="VetHub LMTP", enable_SMTPUTF8=True),
            self.config.host, self.config.port)
        self.port = self.server.sockets[0].getsockname()[1]
        log.info("inbound email: LMTP listening on %s:%s", self.config.host, self.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
