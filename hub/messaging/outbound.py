"""What other domains call to send a message.

Every message takes one path: gather the facts, ask the contact policies for a verdict on each
channel in the sender's order, render the template for the first channel that may be used,
record the communication (content, address, verdict and reasons, status) and enqueue its send
job in the caller's transaction (idempotency key = communication id). A vetoed message is
recorded too, as ``suppressed``, so "why did Mrs. Smith get nothing?" has an answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.instrumentation import manager_of_class

from hub.db.base import table_of
from hub.db.models import Job
from hub.messaging import links
from hub.messaging.addresses import normalise_email
from hub.messaging.config import messaging_config
from hub.messaging.facts import (
    PracticeFacts,
    build_context,
    channel_address,
    load_clients,
    load_consent,
    load_practices,
    load_suppressions,
    pims_models,
    suppression_key,
)
from hub.messaging.models import Communication, CommunicationStatus
from hub.messaging.templates import Rendered, TemplateError, TemplateRenderer
from hub.messaging.verdict import CATEGORIES, CHANNELS, UNSUBSCRIBABLE, ClientFacts, Verdict, judge
from hub.state import HubKey

if TYPE_CHECKING:
    from hub.core import Hub

SEND_JOB = "messaging.send"


class MessagingError(ValueError):
    """A request to send that cannot be honoured (unknown template, category, client)."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.field = code, message, field


@dataclass
class Plan:
    """The verdict for one recipient: the channel chosen (if any) and every channel's reasons."""

    client: ClientFacts | None
    channel: str
    address: str
    postal: dict | None
    verdict: Verdict
    reasons: list[dict[str, Any]]
    remaining: list[str]
    practice: PracticeFacts | None


RENDERER: HubKey[TemplateRenderer] = HubKey("messaging.renderer")


def renderer(hub: Hub) -> TemplateRenderer:
    """One renderer per hub: compiled templates are cached in it."""
    return hub.state.setdefault(RENDERER, lambda: TemplateRenderer(hub))


def _check(category: str, channels: Sequence[str]) -> list[str]:
    if category not in CATEGORIES:
        raise MessagingError("unknown_category", f"unknown category {category!r}; expected one of "
                             f"{', '.join(sorted(CATEGORIES))}", "category")
    chans = list(dict.fromkeys(channels))
    if not chans or any(c not in CHANNELS for c in chans):
        raise MessagingError("unknown_channel", f"channels must be some of {', '.join(CHANNELS)}", "channels")
    return chans


#: Templates the hub sends itself (welcome, set-password, switch notices): never through the
#: public communications API. Domains register theirs with :func:`register_internal_templates`.
INTERNAL_TEMPLATES: set[str] = set()

#: Context keys the hub fills itself; a caller's context never overrides them.
HUB_KEYS = frozenset({"client", "practice", "preferences_url", "unsubscribe_url", "category", "channel"})


def register_internal_templates(names: Sequence[str]) -> None:
    INTERNAL_TEMPLATES.update(names)


def _refuse_account_to_client(category: str) -> None:
    if category == "account":
        raise MessagingError("account_to_client", "category 'account' is operational mail between the hub, "
                             "practices and companies; it is never sent to a client", "category")


# --------------------------------------------------------------------------- planning


async def plan_for_clients(
    session: AsyncSession, hub: Hub, client_ids: Sequence[int], *, category: str,
    channels: Sequence[str],
) -> dict[int, Plan | None]:
    """Judge every client on each channel in order; None for an unknown client.

    Channel by channel: the suppressions of a channel are read (one query per chunk) only for
    the clients every earlier channel vetoed, so a campaign whose emails are allowed never
    reads, or works out, a phone number or mailing address it will not use.
    """
    chans = _check(category, channels)
    _refuse_account_to_client(category)
    clients = await load_clients(session, client_ids)
    consent = await load_consent(session, list(clients))
    practices = await load_practices(session, (f.practice_id for f, _ in clients.values()))
    chosen: dict[int, Plan] = {}
    reasons: dict[int, list[dict[str, Any]]] = {cid: [] for cid in clients}
    undecided = list(clients)
    for i, ch in enumerate(chans):
        if not undecided:
            break
        targets = {cid: channel_address(ch, clients[cid][0]) for cid in undecided}
        keys = {cid: suppression_key(ch, addr, postal) for cid, (addr, postal) in targets.items()}
        suppressions = await load_suppressions(session, keys.values())
        vetoed = []
        for cid in undecided:
            facts = clients[cid][0]
            practice = practices.get(facts.practice_id) if facts.practice_id else None
            addr, postal = targets[cid]
            ctx = build_context(
                hub, channel=ch, category=category, address=addr, postal=postal, client=facts,
                consent_rows=consent.get(cid, ()), suppressions=suppressions.get(keys[cid], ()),
                practice=practice,
            )
            verdict = judge(hub.pm, ctx)
            reasons[cid].extend(verdict.reasons_json(ch))
            if verdict.decision == "veto":
                vetoed.append(cid)
            else:
                chosen[cid] = Plan(facts, ch, addr, postal, verdict, reasons[cid], chans[i + 1:], practice)
        undecided = vetoed
    for cid in undecided:  # every channel vetoed: recorded on the first
        facts = clients[cid][0]
        addr, postal = channel_address(chans[0], facts)
        practice = practices.get(facts.practice_id) if facts.practice_id else None
        chosen[cid] = Plan(facts, chans[0], addr, postal, Verdict("veto", ()), reasons[cid], [], practice)
    return {cid: chosen.get(cid) for cid in client_ids}


# --------------------------------------------------------------------------- rendering


def standard_context(hub: Hub, *, client: ClientFacts | None, practice: PracticeFacts | None,
                     category: str, channel: str, address: str) -> dict[str, Any]:
    """Keys every template may use: client, practice, preferences_url, unsubscribe_url."""
    cfg = messaging_config(hub)
    secret = links.secret_of(hub)
    now = hub.clock.now()
    preferences_url = unsubscribe_url = None
    if client is not None:
        token = links.sign(secret, "prefs", {"c": client.id},
                           now + timedelta(days=cfg.preference_link_days))
        preferences_url = links.public_url(hub, f"/messaging/preferences/{token}")
    if channel == "email" and category in UNSUBSCRIBABLE and address:
        unsubscribe_url = links.public_url(hub, f"/messaging/unsubscribe/{unsubscribe_token(hub, client, category, address)}")
    return {
        "client": {"id": client.id, "name": client.name} if client else None,
        "practice": {"id": practice.id, "name": practice.name, "slug": practice.slug,
                     "email": practice.email, "phone": practice.phone}
        if practice else {"id": None, "name": hub.config.hub.name, "slug": None, "email": None, "phone": None},
        "preferences_url": preferences_url,
        "unsubscribe_url": unsubscribe_url,
        "category": category,
        "channel": channel,
    }


def unsubscribe_token(hub: Hub, client: ClientFacts | None, category: str, address: str) -> str:
    cfg = messaging_config(hub)
    payload: dict[str, Any] = {"g": category, "a": normalise_email(address)}
    if client is not None:
        payload["c"] = client.id
    return links.sign(links.secret_of(hub), "unsub", payload,
                      hub.clock.now() + timedelta(days=cfg.unsubscribe_link_days))


def email_headers(hub: Hub, *, category: str, unsubscribe_url: str | None, address: str) -> dict[str, str]:
    """RFC 2369 / RFC 8058 headers for categories a person can leave."""
    if category not in UNSUBSCRIBABLE or not unsubscribe_url:
        return {}
    email_cfg = hub.config.section("email")
    mailbox = None
    if email_cfg is not None:
        mailbox = getattr(email_cfg, "unsubscribe_mailto", None) or getattr(email_cfg, "from_address", None)
    token = unsubscribe_url.rsplit("/", 1)[-1]
    uris = [f"<{unsubscribe_url}>"]
    if mailbox:
        uris.append(f"<mailto:{mailbox}?subject=unsubscribe%20{token}>")
    return {
        "List-Unsubscribe": ", ".join(uris),
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


def render_for(hub: Hub, *, template: str, channel: str, context: dict[str, Any],
               practice: PracticeFacts | None) -> Rendered:
    try:
        return renderer(hub).render(template, channel, context, practice.slug if practice else None)
    except TemplateError as err:
        raise MessagingError("template_error", f"template {template!r} for {channel}: {err}", "template") from err


# --------------------------------------------------------------------------- recording

_COMMUNICATIONS = table_of(Communication)
_HISTORY = table_of(CommunicationStatus)
_JOBS = table_of(Job)
#: every column but the id: a row names them all, so the rows of one batch share one INSERT and
#: an object built from one (see :func:`_attach`) has nothing left to load
_COLUMNS = tuple(c.name for c in _COMMUNICATIONS.columns if c.name != "id")


def communication_row(
    hub: Hub, *, plan: Plan, template: str, category: str, context: dict[str, Any],
    cc: Sequence[str] = (), company_id: int | None = None, practice_id: int | None = None,
    created_by: str | None = None, fallback_of_id: int | None = None,
) -> dict[str, Any]:
    """The communication row for a plan, rendered when the verdict allows (no I/O)."""
    now = hub.clock.now()
    verdict = plan.verdict
    practice = plan.practice
    row: dict[str, Any] = dict.fromkeys(_COLUMNS)
    row.update(
        practice_id=practice_id if practice_id is not None else (practice.id if practice else None),
        company_id=company_id, client_id=plan.client.id if plan.client else None,
        channel=plan.channel, category=category, template=template, address=plan.address,
        cc=list(cc) if plan.channel == "email" else [], postal_address=plan.postal,
        headers={}, verdict=verdict.decision, verdict_reasons=plan.reasons,
        fallback_channels=plan.remaining, fallback_of_id=fallback_of_id, context=context,
        created_by=created_by, created_at=now, updated_at=now,
    )
    if verdict.decision == "veto":
        row["status"] = "suppressed"
        return row
    # the hub's own keys (signed preference and unsubscribe links among them) win over the caller's
    full = {**context, **standard_context(hub, client=plan.client, practice=practice, category=category,
                                          channel=plan.channel, address=plan.address)}
    rendered = render_for(hub, template=template, channel=plan.channel, context=full, practice=practice)
    row.update(subject=rendered.subject, body_text=rendered.text, body_html=rendered.html,
               postcard_front_html=rendered.postcard_front_html,
               postcard_back_html=rendered.postcard_back_html)
    if plan.channel == "email":
        row["headers"] = email_headers(hub, category=category, unsubscribe_url=full.get("unsubscribe_url"),
                                       address=plan.address)
    if verdict.decision == "defer":
        row["status"], row["not_before"] = "deferred", verdict.defer_until
    else:
        row["status"] = "queued"
    return row


async def _insert_communication_rows(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert the rows; their ids, in the rows' order.

    SQLite cannot promise RETURNING's order, so SQLAlchemy answers an ordered RETURNING there
    with one INSERT per row. Instead the ids are chosen here: every SQLite transaction of the
    hub holds the write lock from its BEGIN (hub.db.engine), so nothing else inserts between
    reading the largest id and writing the rows, and max + 1 is what SQLite would pick itself
    (the table is not AUTOINCREMENT). Were that ever untrue, the INSERT fails on the primary key
    rather than misnumbering a message. PostgreSQL returns the ids in order from one statement.
    """
    table = _COMMUNICATIONS
    if len(rows) > 1 and session.get_bind().dialect.name == "sqlite":
        last = (await session.execute(select(func.max(table.c.id)))).scalar_one() or 0
        ids = list(range(last + 1, last + 1 + len(rows)))
        await session.execute(insert(table), [{**row, "id": i} for row, i in zip(rows, ids, strict=True)])
        return ids
    result = await session.execute(insert(table).returning(table.c.id, sort_by_parameter_order=True),
                                   list(rows))
    return [r[0] for r in result]


async def insert_communication_rows(session: AsyncSession, hub: Hub,
                                    rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert communications, their first history rows and their send jobs; the ids, in order.

    Core executemany, no ORM objects: a chunk of a campaign costs a handful of statements. The
    communication and its history row are written before the send job, all in the caller's
    transaction. The send jobs are written as ``hub.jobs.enqueue`` writes them (kind, payload,
    run_at, idempotency key ``communication:<id>``); the keys are fresh communication ids, so
    they cannot collide.
    """
    if not rows:
        return []
    ids = await _insert_communication_rows(session, rows)
    now = hub.clock.now()
    await session.execute(insert(_HISTORY), [
        {"communication_id": i, "status": row["status"], "provider_status": None, "applied": True,
         "at": now, "detail": {"verdict": row["verdict"]}}
        for i, row in zip(ids, rows, strict=True)])
    sendable = [(i, row) for i, row in zip(ids, rows, strict=True) if row["status"] in ("queued", "deferred")]
    if len(sendable) == 1:
        i, row = sendable[0]
        await hub.jobs.enqueue(session, SEND_JOB, {"communication_id": i}, run_at=row["not_before"],
                               idempotency_key=f"communication:{i}")
    elif sendable:
        max_attempts = hub.config.jobs.max_attempts
        await session.execute(insert(_JOBS), [
            {"kind": SEND_JOB, "payload": {"communication_id": i}, "status": "queued",
             "run_at": row["not_before"] or now, "attempts": 0, "max_attempts": max_attempts,
             "idempotency_key": f"communication:{i}", "created_at": now}
            for i, row in sendable])
        hub.jobs.wake_after_commit(session)
    return ids


def _attach(session: AsyncSession, row: dict[str, Any], comm_id: int) -> Communication:
    """The inserted row as a persistent object, without reading it back: every column is
    given, so nothing is left to load, and later changes to it are flushed as usual.

    The values go straight into the instance's dict, as a query's loader puts them: the
    constructor sets each of the ~30 attributes through its instrumentation (attribute
    events, history), a third of queueing a campaign's CPU, for values that are committed
    the next moment anyway.
    """
    comm = _NEW_COMMUNICATION()
    comm.__dict__.update(row)
    comm.__dict__["id"] = comm_id
    make_transient_to_detached(comm)  # all of it committed state: nothing pending
    session.add(comm)
    return comm


_NEW_COMMUNICATION = manager_of_class(Communication).new_instance


async def record_communication(
    session: AsyncSession, hub: Hub, *, plan: Plan, template: str, category: str,
    context: dict[str, Any], cc: Sequence[str] = (), company_id: int | None = None,
    practice_id: int | None = None, created_by: str | None = None,
    fallback_of_id: int | None = None,
) -> Communication:
    """Render (when the verdict allows), insert, and enqueue the send job."""
    row = communication_row(hub, plan=plan, template=template, category=category, context=context,
                            cc=cc, company_id=company_id, practice_id=practice_id,
                            created_by=created_by, fallback_of_id=fallback_of_id)
    [comm_id] = await insert_communication_rows(session, hub, [row])
    return _attach(session, row, comm_id)


# --------------------------------------------------------------------------- public API


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
    _check(category, ["email"])
    if client_id is not None:
        _refuse_account_to_client(category)
    address = to.strip()
    # a bare address that is a known client's is that client's: its preferences apply
    candidates = [client_id] if client_id is not None else (
        [] if category == "account" else await clients_with_email(session, address, practice_id))
    clients = await load_clients(session, candidates) if candidates else {}
    consent = await load_consent(session, list(clients)) if clients else {}
    pid = practice_id
    if pid is None and client_id in clients:
        pid = clients[client_id][0].practice_id
    practice = (await load_practices(session, [pid])).get(pid) if pid is not None else None
    key = suppression_key("email", address, None)
    suppressions = (await load_suppressions(session, [key])).get(key, ())
    plan: Plan | None = None
    known: list[ClientFacts | None] = [f for f, _ in clients.values()]
    for facts in known or [None]:
        ctx = build_context(hub, channel="email", category=category, address=address, postal=None,
                            client=facts, consent_rows=consent.get(facts.id, ()) if facts else (),
                            suppressions=suppressions, practice=practice)
        verdict = judge(hub.pm, ctx)
        if plan is None or verdict.decision == "veto":  # the strictest answer holds
            plan = Plan(facts, "email", address, None, verdict, verdict.reasons_json("email"), [], practice)
        if verdict.decision == "veto":
            break
    assert plan is not None
    return await record_communication(
        session, hub, plan=plan, template=template, category=category, context=dict(context),
        cc=[c for c in cc if c and c.strip().lower() != address.lower()],
        company_id=company_id, practice_id=pid,
    )


async def clients_with_email(session: AsyncSession, address: str, practice_id: int | None) -> list[int]:
    """Ids of the clients whose email is ``address`` (in the practice, when one is named)."""
    Client, _ = pims_models()
    stmt = select(Client.id).where(func.lower(Client.email) == normalise_email(address)).limit(50)
    if practice_id is not None:
        stmt = stmt.where(Client.practice_id == practice_id)
    return list((await session.execute(stmt)).scalars())


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
    [comm] = await queue_many(session, hub, client_ids=[client_id], template=template,
                              category=category, channels=channels, context=context)
    return comm


@dataclass(frozen=True)
class Queued:
    """What a bulk caller needs back about one queued message."""

    id: int
    client_id: int
    channel: str
    status: str
    verdict_reasons: list[dict[str, Any]]


async def queue_bulk(
    session: AsyncSession, hub: Hub, *, client_ids: Sequence[int], template: str, category: str,
    channels: Sequence[str] = ("email", "sms", "postcard"), context: dict | None = None,
    per_client_context: dict[int, dict] | None = None, created_by: str | None = None,
) -> list[Queued]:
    """:func:`queue_many` without the ORM objects, for runs of thousands (the reminder run)."""
    rows = await _campaign_rows(session, hub, client_ids=client_ids, template=template,
                                category=category, channels=channels, context=context,
                                per_client_context=per_client_context, created_by=created_by)
    ids = await insert_communication_rows(session, hub, rows)
    return [Queued(i, cid, row["channel"], row["status"], row["verdict_reasons"])
            for i, cid, row in zip(ids, client_ids, rows, strict=True)]


async def queue_many(
    session: AsyncSession, hub: Hub, *, client_ids: Sequence[int], template: str, category: str,
    channels: Sequence[str] = ("email", "sms", "postcard"), context: dict | None = None,
    per_client_context: dict[int, dict] | None = None, created_by: str | None = None,
) -> list[Communication]:
    """Queue one message per client (a campaign), judging them all in a few queries."""
    rows = await _campaign_rows(session, hub, client_ids=client_ids, template=template,
                                category=category, channels=channels, context=context,
                                per_client_context=per_client_context, created_by=created_by)
    ids = await insert_communication_rows(session, hub, rows)
    return [_attach(session, row, i) for i, row in zip(ids, rows, strict=True)]


async def _campaign_rows(
    session: AsyncSession, hub: Hub, *, client_ids: Sequence[int], template: str, category: str,
    channels: Sequence[str], context: dict | None, per_client_context: dict[int, dict] | None,
    created_by: str | None,
) -> list[dict[str, Any]]:
    plans = await plan_for_clients(session, hub, client_ids, category=category, channels=channels)
    missing = [cid for cid, p in plans.items() if p is None]
    if missing:
        raise MessagingError("unknown_client", f"no client with id {missing[0]}", "client_id")
    rows = []
    for cid in client_ids:
        plan = plans[cid]
        assert plan is not None
        ctx = {**(context or {}), **((per_client_context or {}).get(cid) or {})}
        rows.append(communication_row(hub, plan=plan, template=template, category=category,
                                      context=ctx, created_by=created_by))
    return rows
