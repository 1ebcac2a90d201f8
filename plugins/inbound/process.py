"""The durable job that acts on one stored inbound email, exactly once.

Keyed by the stored message's id: the row is locked, and a row already ``processed`` is left
alone, so a job replayed after a crash (its lease expired) or run twice does nothing twice. The
actions go through the messaging service (suppressions, consent, inbound replies), the accounts
service (draft switch requests) and operator events; this module writes no table but its own.
"""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import timedelta
from email.utils import parseaddr
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub import events
from hub.accounts import drafts
from hub.db.models import Practice
from hub.messaging import links, service
from hub.messaging.models import Communication
from plugins.channels.email import hub_secret, read_address_token

from .auth import authenticated
from .config import InboundConfig
from .models import InboundEmail, InboundKind, InboundState
from .parse import Bounce, Parsed, parse, plain_body, read_bounce, read_complaint

if TYPE_CHECKING:
    from hub.core import Hub
    from hub.jobs import JobContext

log = logging.getLogger(__name__)

PROCESS_JOB = "inbound.process"
#: who opened a draft switch request, in its steps and the audit log
ACTOR = "inbound-email"

#: words that make a practice's email a request to change companies (an operator confirms)
SWITCH_WORDS = re.compile(
    r"\b(switch|switching|move|moving|transfer|change|changing)\b[^.?!]{0,80}?"
    r"\b(compan(y|ies)|provider|radiolog\w*|reading group|teleradiology|account)", re.I)


def inbound_config(hub: Hub) -> InboundConfig:
    section = hub.config.section("inbound")
    return section if isinstance(section, InboundConfig) else InboundConfig()


async def process_job(hub: Hub, job: JobContext) -> None:
    await process(hub, int(job.payload["id"]))


async def process(hub: Hub, inbound_id: int) -> str | None:
    """Act on stored message ``inbound_id`` unless that was done; returns its kind."""
    async with hub.transaction() as session:
        row = (await session.execute(
            select(InboundEmail).where(InboundEmail.id == inbound_id).with_for_update()
        )).scalar_one_or_none()
        if row is None or row.state == InboundState.processed:
            return row.kind if row else None
        await Processor(session, hub, row).run()
        row.state = InboundState.processed
        row.processed_at = hub.clock.now()
        await session.flush()
        return row.kind


class Processor:
    """Acts on one stored inbound email: bounce, complaint, unsubscribe, reply or switch request."""
    def __init__(self, session: AsyncSession, hub: Hub, row: InboundEmail) -> None:
        self.session, self.hub, self.row = session, hub, row
        self.config = inbound_config(hub)
        self.secret = hub_secret(hub)
        self.parsed: Parsed = parse(row.raw)

    # --- dispatch --------------------------------------------------------------------------------

    async def run(self) -> None:
        row, parsed = self.row, self.parsed
        # in a thread: a DKIM key lookup is blocking DNS, and may take up to dns_timeout
        row.authenticated, why = await asyncio.to_thread(
            authenticated, row.raw, parsed.message, parsed.from_address, row.peer, self.config)
        row.note = why
        verp = self._token("bounces", "verp")
        complaint = read_complaint(parsed.message)
        if complaint is not None:
            return await self._complaint(complaint)
        null_sender = row.mail_from.strip("<>") == ""
        is_report = parsed.message.get_content_type() == "multipart/report"
        if verp is not None or null_sender or is_report:
            bounce = read_bounce(parsed.message)
            if bounce is not None and bounce.failures:
                return await self._bounce(bounce, verp)
        if self._to_unsubscribe():
            return await self._unsubscribe()
        answered = await self._answered()
        if answered is not None:
            return await self._reply(answered)
        if self.config.support_address and self.config.support_address.lower() in self._rcpts():
            return await self._written()
        kind = InboundKind.unmatched_reply if (self._tagged("reply") or parsed.message_ids) \
            else InboundKind.unrecognised
        await self._keep(kind, f"{kind.value.replace('_', ' ')} from {parsed.from_address or 'nobody'}")

    def _rcpts(self) -> set[str]:
        return {r.lower() for r in self.row.rcpt_to}

    def _tagged(self, base: str) -> list[str]:
        """The +tags of envelope recipients whose local part is ``base+tag``."""
        tags = []
        for rcpt in self.row.rcpt_to:
            local = rcpt.rpartition("@")[0]
            name, plus, tag = local.partition("+")
            if plus and name.lower() == base:
                tags.append(tag)
        return tags

    def _token(self, base: str, purpose: str) -> int | None:
        for tag in self._tagged(base):
            ident = read_address_token(self.secret, purpose, tag)
            if ident is not None:
                return ident
        return None

    async def _keep(self, kind: InboundKind, message: str, *, practice_id: int | None = None,
                    event: str | None = None, data: dict[str, Any] | None = None) -> None:
        """Keep the message for an operator: flagged, with an operator event."""
        self.row.kind, self.row.flagged = kind, True
        await events.record(
            self.session, event or f"inbound.{kind.value}", message, practice_id=practice_id,
            data={"inbound_email_id": self.row.id, "from": self.parsed.from_address,
                  "subject": self.parsed.subject[:300], "authenticated": self.row.authenticated,
                  **(data or {})})

    async def _spoofed(self, kind: InboundKind, what: str) -> None:
        self.row.outcome = {"refused": "not authenticated"}
        await self._keep(kind, f"{what} from {self.parsed.from_address or 'nobody'} not acted on: "
                               f"{self.row.note}", event="inbound.unauthenticated")

    async def _comm_by_message_id(self, ids: list[str | None]) -> Communication | None:
        for mid in [m for m in ids if m]:
            comm = (await self.session.execute(
                select(Communication).where(Communication.channel == "email",
                                            Communication.provider_id == mid)
                .order_by(Communication.id.desc()).limit(1))).scalar_one_or_none()
            if comm is not None:
                return comm
        return None

    # --- bounces ---------------------------------------------------------------------------------

    async def _bounce(self, bounce: Bounce, verp: int | None) -> None:
        row = self.row
        comm = await self.session.get(Communication, verp) if verp is not None else None
        comm = comm or await self._comm_by_message_id([bounce.original_message_id])
        hard = any(f.permanent for f in bounce.failures)
        row.kind = InboundKind.bounce_hard if hard else InboundKind.bounce_soft
        row.communication_id = comm.id if comm else None
        # a signed VERP address is only known to whoever received our message: a DSN sent to it
        # is believed without the From checks (a MAILER-DAEMON rarely signs its reports)
        if not (row.authenticated or verp is not None):
            return await self._spoofed(row.kind, "bounce")
        known = {comm.address.lower(), *(a.lower() for a in comm.cc)} if comm else set()
        done = []
        for failure in bounce.failures:
            address = failure.address
            if comm is not None and known and address not in known and len(bounce.failures) == 1:
                address = comm.address.lower()  # forwarded: the address we sent to failed
            row.address = row.address or address
            if failure.permanent:
                await self._hard(address, failure.status, failure.diagnostic, comm, bounce.source)
                done.append({"address": address, "hard": True, "status": failure.status})
            else:
                marked = await self._soft(address, failure.status)
                done.append({"address": address, "hard": False, "status": failure.status,
                             "marked_invalid": marked})
        row.outcome = {"failures": done, "source": bounce.source, "communication_id": row.communication_id}

    async def _hard(self, address: str, status: str, diagnostic: str, comm: Communication | None,
                    source: str) -> None:
        reason = f"bounced {status or '5.0.0'} {diagnostic}".strip()[:300]
        if comm is not None:
            reason += f" (communication {comm.id}, inbound email {self.row.id})"
            if comm.address.lower() == address:
                await service.apply_status(self.session, self.hub, comm, "bounced",
                                           provider_status=status or None,
                                           detail={"inbound_email_id": self.row.id, "via": source})
        await service.mark_address_invalid(self.session, self.hub, kind="email", address=address,
                                           reason=reason, source="bounce")

    async def _soft(self, address: str, status: str) -> bool:
        since = self.hub.clock.now() - timedelta(days=self.config.soft_bounce_days)
        earlier = (await self.session.execute(
            select(func.count(InboundEmail.id)).where(
                InboundEmail.address == address, InboundEmail.kind == InboundKind.bounce_soft,
                InboundEmail.state == InboundState.processed, InboundEmail.received_at >= since,
                InboundEmail.id != self.row.id))).scalar() or 0
        if earlier + 1 < self.config.soft_bounce_threshold:
            return False
        await service.mark_address_invalid(
            self.session, self.hub, kind="email", address=address, source="bounce",
            reason=f"{earlier + 1} soft bounces in {self.config.soft_bounce_days} days "
                   f"(last {status or '4.0.0'}, inbound email {self.row.id})")
        return True

    # --- complaints, unsubscribes ----------------------------------------------------------------

    async def _complaint(self, complaint: Any) -> None:
        row = self.row
        row.kind = InboundKind.complaint
        comm = await self._comm_by_message_id([complaint.original_message_id])
        row.communication_id = comm.id if comm else None
        address = complaint.original_recipient or (comm.address if comm else None)
        row.address = address
        if not row.authenticated:
            return await self._spoofed(InboundKind.complaint, "complaint")
        if not address:
            return await self._keep(InboundKind.complaint, "a complaint names no message we sent")
        await service.record_complaint(self.session, self.hub, address=address,
                                       provider=complaint.reporter, detail=complaint.feedback_type,
                                       communication_id=row.communication_id)
        row.outcome = {"suppressed": "marketing", "address": address, "provider": complaint.reporter}

    def _unsubscribe_addresses(self) -> set[str]:
        from plugins.channels.email import email_config

        email_cfg = email_config(self.hub)
        chosen = self.config.unsubscribe_address or (
            email_cfg and (email_cfg.unsubscribe_mailto or email_cfg.from_address))
        return {chosen.lower()} if chosen else set()

    def _to_unsubscribe(self) -> bool:
        mailboxes = self._unsubscribe_addresses()
        plain = {f"{r.partition('+')[0]}@{r.rpartition('@')[2]}" for r in self._rcpts()}
        return bool(mailboxes & (self._rcpts() | plain))

    def _unsubscribe_token(self) -> dict[str, Any] | None:
        candidates = [tag for rcpt in self.row.rcpt_to
                      for tag in [rcpt.rpartition("@")[0].partition("+")[2]] if tag]
        candidates += re.findall(r"[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+", self.parsed.subject)
        for token in candidates:
            try:
                return links.verify(links.secret_of(self.hub), "unsub", token, self.hub.clock.now())
            except links.BadToken:
                continue
        return None

    async def _unsubscribe(self) -> None:
        row = self.row
        row.kind = InboundKind.unsubscribe
        data = self._unsubscribe_token()
        if data is None:
            return await self._keep(InboundKind.unsubscribe, "an unsubscribe message without a valid token")
        if not row.authenticated:
            return await self._spoofed(InboundKind.unsubscribe, "unsubscribe")
        category, address = str(data.get("g")), str(data.get("a", ""))
        row.address = address
        # what the one-click POST does (hub/messaging/web.py), from a mail client instead
        if data.get("c") is not None:
            from hub.messaging.facts import load_clients

            client_id = int(data["c"])
            clients = await load_clients(self.session, [client_id])
            practice_id = clients[client_id][0].practice_id if client_id in clients else None
            await service.record_consent(self.session, self.hub, client_id=client_id, category=category,
                                         channel="email", allowed=False, source="one_click",
                                         practice_id=practice_id,
                                         detail=f"List-Unsubscribe mailto for {address}")
        else:
            await service.set_address_opt_out(self.session, self.hub, kind="email", address=address,
                                              opted_out=True, source="one_click",
                                              detail=f"category {category} (mailto)")
        row.outcome = {"unsubscribed": category, "address": address, "client_id": data.get("c")}

    # --- replies, written requests ---------------------------------------------------------------

    async def _answered(self) -> Communication | None:
        ident = self._token("reply", "reply")
        if ident is not None:
            comm = await self.session.get(Communication, ident)
            if comm is not None:
                return comm
        return await self._comm_by_message_id(list(self.parsed.message_ids))

    async def _reply(self, comm: Communication) -> None:
        row, parsed = self.row, self.parsed
        row.kind, row.communication_id = InboundKind.reply, comm.id
        msg = await service.record_inbound(
            self.session, self.hub, channel="email", from_address=parsed.from_address or row.mail_from,
            to_address=(row.rcpt_to or [""])[0], body=plain_body(parsed.message),
            provider_id=f"inbound-email:{row.id}", communication_id=comm.id,
            raw={"inbound_email_id": row.id, "subject": parsed.subject[:300],
                 "authenticated": bool(row.authenticated)})
        row.outcome = {"inbound_message_id": msg.id, "client_id": msg.client_id}
        row.flagged = not row.authenticated

    async def _written(self) -> None:
        parsed = self.parsed
        practices = (await self.session.execute(
            select(Practice.id, Practice.name).where(func.lower(Practice.email) == parsed.from_address)
        )).all() if parsed.from_address else []
        if len(practices) != 1:
            kind = InboundKind.unknown_sender if not practices else InboundKind.conversation
            return await self._keep(kind, f"a message to support from {parsed.from_address or 'nobody'}, "
                                          "which is no one practice's registered address")
        practice_id, name = practices[0]
        body = plain_body(parsed.message)
        if not SWITCH_WORDS.search(f"{parsed.subject}\n{body}"):
            return await self._keep(InboundKind.conversation, f"{name} wrote: {parsed.subject[:120]}",
                                    practice_id=practice_id, data={"statement": body[:5000]})
        if not self.row.authenticated:
            return await self._spoofed(InboundKind.switch_request, "switch request")
        # a draft for an operator to confirm or discard: it opens no window and changes no account
        draft = await drafts.open_draft(
            self.session, self.hub, practice_id=practice_id, statement=body[:20_000],
            statement_ref=f"inbound_email:{self.row.id}", requester_email=parsed.from_address,
            requester_name=parseaddr(str(parsed.message.get("From", "")))[0] or name, actor=ACTOR)
        self.row.kind = InboundKind.switch_request
        self.row.outcome = {"switch_request_id": draft.id, "practice_id": practice_id,
                            "new_company_id": draft.new_company_id}
