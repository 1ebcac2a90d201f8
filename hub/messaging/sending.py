"""The send job (the outbox): one durable job per communication, key ``communication:<id>``.

Delivery is at least once. The job:

1. re-reads the communication and stops if it is already past ``sending`` (a replayed job);
   re-checks the address against suppressions recorded since it was queued (a STOP, a bounce);
   marks it ``sending``; commits;
2. calls the channel **outside** any transaction;
3. records the outcome: ``sent`` with the provider id, or, for a permanent failure, ``bounced``/
   ``failed`` plus the address suppression and an operator event, and the next channel the
   sender allowed (a new communication, judged again). Transient failures retry with backoff;
   the last attempt marks the communication ``failed``.

A crash between 2 and 3 leaves the communication ``sending`` and its job leased; the lease
expires and the job runs again. The hand-off journal (:mod:`hub.messaging.handoff`) says
whether the provider had accepted it: then ``sent`` is recorded without sending; otherwise it
goes out again — so the duplicates are bounded by the messages on the wire at the crash (handed
to the server, answer not yet recorded). Email carries the same Message-ID both times.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, case, func, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from hub import events
from hub.jobs import JobContext, PermanentJobError, RetryAfter
from hub.messaging import links, service, statuses
from hub.messaging.channel import ChannelError, OutboundMessage, SendResult
from hub.messaging.config import messaging_config
from hub.messaging.facts import suppression_key
from hub.messaging.groupcommit import GroupCommit
from hub.messaging.handoff import open_journal
from hub.messaging.models import AddressSuppression, Communication, CommunicationStatus
from hub.messaging.statuses import CommStatus
from hub.ops.metrics import SEND_FAILURES
from hub.state import HubKey

if TYPE_CHECKING:
    from hub.core import Hub

log = logging.getLogger(__name__)

RESUMABLE = frozenset({"queued", "deferred", "sending"})


def tracked_html(hub: Hub, comm: Any) -> str | None:
    """The HTML part with an open pixel and click redirects, when tracking is on."""
    html = comm.body_html
    if html is None or not messaging_config(hub).tracking:
        return html
    import re

    secret = links.secret_of(hub)

    def _link(match: re.Match[str]) -> str:
        url = match.group(2)
        if not url.startswith(("http://", "https://")) or "/messaging/" in url or "sealed." in url:
            return match.group(0)
        token = links.sign(secret, "click", {"m": comm.id, "u": url}, None)
        return f'{match.group(1)}{links.public_url(hub, "/messaging/t/c/" + token)}{match.group(3)}'

    html = re.sub(r'(href=")([^"]+)(")', _link, html)
    pixel_token = links.sign(secret, "open", {"m": comm.id}, None)
    pixel = f'<img src="{links.public_url(hub, "/messaging/t/o/" + pixel_token + ".gif")}" width="1" height="1" alt="">'
    return html.replace("</body>", pixel + "</body>") if "</body>" in html else html + pixel


def outbound_message(hub: Hub, comm: Any) -> OutboundMessage:
    return OutboundMessage(
        communication_id=comm.id,
        channel=comm.channel,
        category=comm.category,
        to=comm.address,
        cc=tuple(comm.cc or ()),
        subject=comm.subject,
        text=links.unseal(links.secret_of(hub), comm.body_text),  # single-use links, see links.sealed
        html=links.unseal(links.secret_of(hub), tracked_html(hub, comm) if comm.channel == "email" else comm.body_html),
        postcard_front_html=comm.postcard_front_html,
        postcard_back_html=comm.postcard_back_html,
        postal_address=comm.postal_address,
        headers=dict(comm.headers or {}),
        practice_id=comm.practice_id,
        idempotency_key=str(comm.id),
    )


async def with_practice_sender(hub: Hub, message: OutboundMessage) -> OutboundMessage:
    """A practice's message comes from the practice (its name, reply address, own domain):
    the clients domain knows the practice's sender settings, when it is installed."""
    try:
        from hub.clients.sender import sender_for  # noqa: PLC0415 - optional domain
    except ImportError:  # pragma: no cover - depends on the installed domains
        return message
    sender = await sender_for(hub, message.practice_id)
    return dataclasses.replace(message, sender=sender) if sender is not None else message


async def _active_suppression(session, comm: Any) -> Any:
    kind, address = suppression_key(comm.channel, comm.address, comm.postal_address)
    if not address:
        return None
    rows = (await session.execute(
        select(AddressSuppression.reason, AddressSuppression.source, AddressSuppression.detail)
        .where(AddressSuppression.kind == kind, AddressSuppression.address == address,
               AddressSuppression.active.is_(True))
    )).all()
    for row in rows:
        if row.reason == "invalid" or comm.category != "account":
            return row
    return None


_SEND_COLUMNS = (
    Communication.id, Communication.channel, Communication.category, Communication.address,
    Communication.cc, Communication.subject, Communication.body_text, Communication.body_html,
    Communication.postcard_front_html, Communication.postcard_back_html, Communication.postal_address,
    Communication.headers, Communication.practice_id,
)

# Statements built once: constructing SQLAlchemy expressions per message costs more CPU than
# executing them (the compiled form is cached either way). The common path is one UPDATE ...
# RETURNING before the send, for every job starting then (see _start_many), and after it one
# UPDATE per message plus one INSERT for all of those finishing then (see _record_results).
#
# The suppression re-check (a STOP or a bounce recorded after the message was queued) is part
# of the UPDATE. Email and SMS suppressions are keyed by the lower-cased address (SMS addresses
# are E.164 already); postcards' keys are computed in Python (see _active_suppression).
_SUPPRESSED = (
    select(AddressSuppression.id)
    .where(
        AddressSuppression.kind == case((Communication.channel == "sms", "sms"), else_="email"),
        AddressSuppression.address == func.lower(Communication.address),
        AddressSuppression.active.is_(True),
        or_(AddressSuppression.reason == "invalid", Communication.category != "account"),
    )
    .exists()
)
_START = (
    update(Communication)
    .where(
        Communication.id.in_(bindparam("cids", expanding=True)),
        Communication.status.in_(sorted(RESUMABLE)),
        # a provider that accepted it (and gave an id) is never asked again
        Communication.provider_id.is_(None),
        or_(Communication.channel == "postcard", ~_SUPPRESSED),
    )
    .values(status=CommStatus.SENDING, updated_at=bindparam("now"))
    .returning(*_SEND_COLUMNS)
)
_HISTORY = insert(CommunicationStatus)
_MARK_SENT = (
    update(Communication)
    .where(Communication.id == bindparam("cid"), Communication.status.in_(sorted(RESUMABLE)))
    .values(status=bindparam("status"), provider_id=bindparam("provider_id"), sent_at=bindparam("now"),
            updated_at=bindparam("now"), last_error=None)
)


async def _suppress(session, hub: Hub, comm_id: int, suppression: Any) -> None:
    full = await session.get(Communication, comm_id)
    assert full is not None
    full.verdict = "veto"
    full.verdict_reasons = [*full.verdict_reasons, {
        "code": "address_invalid" if suppression.reason == "invalid" else "address_opted_out",
        "message": f"suppressed before sending ({suppression.source}: {suppression.detail})",
        "plugin": "messaging", "decision": "veto", "channel": full.channel}]
    await service.apply_status(session, hub, full, "suppressed", detail={"suppression": suppression.source})


async def send_job(hub: Hub, job: JobContext) -> None:
    """Send one communication (see the module docstring for the steps and the guarantees).

    The common path's two writes are Core statements, each shared with the send jobs writing
    at the same moment (:class:`~hub.messaging.groupcommit.GroupCommit`): a worker's claimed
    batch starts together, so one transaction re-checks and marks ``sending`` all of them,
    each just before its own send, and results finishing together are recorded together. The
    uncommon paths (gone, done, suppressed) use an ORM session.
    """
    comm_id = int(job.payload["communication_id"])
    comm, started = await hub.state.setdefault(STARTS, lambda: GroupCommit(hub, _start_many(hub))).write(comm_id)
    if comm is None or comm.channel == "postcard":
        async with hub.transaction() as session:
            full = await session.get(Communication, comm_id)
            if full is None:
                raise PermanentJobError(f"communication {comm_id} does not exist")
            if comm is None and (full.status not in RESUMABLE or full.provider_id is not None):
                return  # already sent (or suppressed, or failed): a replayed job does nothing
            suppression = await _active_suppression(session, full)
            if suppression is not None:
                await _suppress(session, hub, comm_id, suppression)
                return
            if comm is None:  # pragma: no cover - the UPDATE and the check disagree
                raise RuntimeError(f"communication {comm_id} could not be started")
    journal = await open_journal(hub)
    message = replace(await with_practice_sender(hub, outbound_message(hub, comm)),
                      on_handed=lambda: journal.record_handed(comm_id))
    sending = {"communication_id": comm_id, "status": "sending", "provider_status": None,
               "applied": True, "at": started, "detail": {"attempt": job.attempts}}
    accepted = journal.accepted.get(comm_id)
    if accepted is not None:  # accepted before a crash: record it, do not send it again
        await _sent(hub, comm_id, SendResult(provider_id=accepted[1], status=accepted[0],
                                             detail={"recovered": "handoff journal"}), sending)
        return
    channel = hub.channels.get(message.channel)
    try:
        if channel is None:
            raise ChannelError(f"the {message.channel} channel is not configured", reason="rejected",
                               permanent=True)
        result: SendResult = await channel.send(message)
    except ChannelError as err:
        await _failed(hub, job, comm_id, err, sending)
        return
    journal.record_accepted(comm_id, result.status, result.provider_id)
    await _sent(hub, comm_id, result, sending)


Started = tuple[Any, datetime]  # the communication's send columns (None: not started), and when
#: per hub: the send jobs' writes before the send and after it, each shared by the jobs then
STARTS: HubKey[GroupCommit[int, Started]] = HubKey("messaging.send_starts")
RESULTS: HubKey[GroupCommit[_Result, bool]] = HubKey("messaging.send_results")


def _start_many(hub: Hub) -> Callable[[Connection, list[int]], list[Started]]:
    """Re-check suppressions and mark ``sending``, in one statement for the jobs starting now."""
    def write(conn: Connection, comm_ids: list[int]) -> list[Started]:
        now = hub.clock.now()
        rows = {row.id: row for row in conn.execute(_START, {"cids": sorted(set(comm_ids)), "now": now})}
        return [(rows.get(comm_id), now) for comm_id in comm_ids]

    return write


@dataclasses.dataclass(frozen=True)
class _Result:
    """One send's outcome to record: the communication's new status and its two history rows."""
    comm_id: int
    status: str
    provider_id: str | None
    at: datetime
    history: tuple[dict[str, Any], dict[str, Any]]  # "sending" (when it started), the new status


def _record_results(conn: Connection, results: list[_Result]) -> list[bool]:
    """Record results in one transaction; per result, whether the status moved (a webhook may
    have moved it on already: then only the history rows are written, marked not applied)."""
    moved = [bool(conn.execute(_MARK_SENT, {"cid": r.comm_id, "status": r.status, "now": r.at,
                                            "provider_id": r.provider_id}).rowcount) for r in results]
    # the "sending" rows are written now, with the time each attempt started: one INSERT
    conn.execute(_HISTORY, [row for r, applied in zip(results, moved, strict=True)
                            for row in (r.history[0], {**r.history[1], "applied": applied})])
    return moved


async def _sent(hub: Hub, comm_id: int, result: SendResult, sending: dict[str, Any]) -> None:
    # The contract: SendResult.status is the hub status after the send, even when it ranks below
    # "sending" (Twilio answers "queued"; its callbacks then move the message on). A recorded
    # provider id is what stops a replayed job from sending again (see _START).
    status = result.status if statuses.is_known(result.status) else "sent"
    now = hub.clock.now()
    record = _Result(comm_id, status, result.provider_id, now, (sending, {
        "communication_id": comm_id, "status": status, "provider_status": result.status,
        "applied": True, "at": now, "detail": result.detail or None}))
    moved = await hub.state.setdefault(RESULTS, lambda: GroupCommit(hub, _record_results)).write(record)
    if moved and hub.pm.hook.vethub_delivery_status.get_hookimpls():
        async with hub.sessionmaker() as session:
            comm = await session.get(Communication, comm_id)
        await hub.fire("vethub_delivery_status", hub=hub, communication=comm, status=status)


async def _failed(hub: Hub, job: JobContext, comm_id: int, err: ChannelError, sending: dict[str, Any]) -> None:
    last = job.attempts >= job.max_attempts
    if not err.permanent and not last:
        async with hub.transaction() as session:
            await session.execute(_HISTORY, [sending])
            await session.execute(update(Communication).where(Communication.id == comm_id)
                                  .values(last_error=str(err), updated_at=hub.clock.now()))
        if err.retry_after:
            raise RetryAfter(err.retry_after, str(err)) from err
        raise err
    async with hub.transaction() as session:
        await session.execute(_HISTORY, [sending])
        comm = await session.get(Communication, comm_id)
        assert comm is not None
        comm.last_error = str(err)
        final = "bounced" if err.reason in ("bounced", "invalid_address") else "failed"
        SEND_FAILURES.labels(comm.channel, err.reason or "error").inc()
        await service.apply_status(session, hub, comm, final, provider_status=str(err.code or err.reason),
                                   detail={"reason": err.reason, "code": err.code, "error": str(err),
                                           "permanent": err.permanent})
        if final == "failed":  # a bounce has its own event (messaging.address_invalid)
            await events.record(session, "messaging.send_failed",
                                f"communication {comm.id} ({comm.channel}) failed: {err}",
                                practice_id=comm.practice_id, reason=err.reason or "error",
                                data={"communication_id": comm.id, "code": err.code,
                                      "permanent": err.permanent})
        await _suppress_after_failure(session, hub, comm, err)
        if messaging_config(hub).fallback and comm.fallback_channels and comm.client_id is not None:
            await _fall_back(session, hub, comm)


async def communication_dead(session: AsyncSession, hub: Hub, job: JobContext, reason: str) -> None:
    """``on_dead`` of the send job: a communication still on its way ends ``failed`` with the
    job's last error (a job abandoned by crashed workers never reached ``_failed``)."""
    comm = await session.get(Communication, int(job.payload["communication_id"]))
    if comm is None or comm.status not in RESUMABLE or comm.provider_id is not None:
        return
    comm.last_error = reason
    SEND_FAILURES.labels(comm.channel, "job_dead").inc()
    await service.apply_status(session, hub, comm, CommStatus.FAILED, provider_status="job_dead",
                               detail={"reason": "job_dead", "job_id": job.id, "error": reason})
    await events.record(session, "messaging.send_failed",
                        f"communication {comm.id} ({comm.channel}) failed: its send job is dead: {reason}",
                        practice_id=comm.practice_id, reason="job_dead",
                        data={"communication_id": comm.id, "job_id": job.id})


async def _suppress_after_failure(session, hub: Hub, comm: Communication, err: ChannelError) -> None:
    kind, address = suppression_key(comm.channel, comm.address, comm.postal_address)
    if not address or not err.permanent:
        return
    if err.reason in ("bounced", "invalid_address"):
        await service.mark_address_invalid(session, hub, kind=kind, address=address,
                                           reason=f"{err.code or ''} {err}".strip(), source="bounce")
    elif err.reason == "opted_out":
        existing = (await session.execute(select(AddressSuppression.id).where(
            AddressSuppression.kind == kind, AddressSuppression.address == address,
            AddressSuppression.reason == "opt_out", AddressSuppression.active.is_(True)))).first()
        if existing is None:
            await service.set_address_opt_out(session, hub, kind=kind, address=address, opted_out=True,
                                              source="provider", detail=str(err))


async def _fall_back(session, hub: Hub, comm: Communication) -> Communication | None:
    from hub.messaging.outbound import MessagingError, plan_for_clients, record_communication

    client_id = comm.client_id
    assert client_id is not None  # the only caller falls back only for a client's communication
    plans = await plan_for_clients(session, hub, [client_id], category=comm.category,
                                   channels=comm.fallback_channels)
    plan = plans.get(client_id)
    if plan is None:
        return None
    try:
        nxt = await record_communication(session, hub, plan=plan, template=comm.template,
                                         category=comm.category, context=dict(comm.context or {}),
                                         company_id=comm.company_id, practice_id=comm.practice_id,
                                         created_by=comm.created_by, fallback_of_id=comm.id)
    except MessagingError as err:
        log.warning("communication %s: no fallback on %s: %s", comm.id, plan.channel, err)
        return None
    log.info("communication %s failed on %s; fell back to %s as communication %s (%s)",
             comm.id, comm.channel, nxt.channel, nxt.id, nxt.status)
    return nxt
