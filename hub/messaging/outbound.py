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

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

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
    """Judge every client on each channel in order; None for an unknown client."""
    chans = _check(category, channels)
    _refuse_account_to_client(category)
    clients = await load_clients(session, client_ids)
    consent = await load_consent(session, list(clients))
    practices = await load_practices(session, (f.practice_id for f, _ in clients.values()))
    keys = []
    for facts, _ in clients.values():
        for ch in chans:
            addr, postal = channel_address(ch, facts)
            keys.append(suppression_key(ch, addr, postal))
    suppressions = await load_suppressions(session, keys)
    plans: dict[int, Plan | None] = {}
    for cid in client_ids:
        if cid not in clients:
            plans[cid] = None
            continue
        facts, _row = clients[cid]
        practice = practices.get(facts.practice_id) if facts.practice_id else None
        reasons: list[dict[str, Any]] = []
        chosen: Plan | None = None
        first: tuple[str, str, dict | None] | None = None
        for i, ch in enumerate(chans):
            addr, postal = channel_address(ch, facts)
            first = first or (ch, addr, postal)
            ctx = build_context(
                hub, channel=ch, category=category, address=addr, postal=postal, client=facts,
                consent_rows=consent.get(cid, ()), suppressions=suppressions.get(suppression_key(ch, addr, postal), ()),
                practice=practice,
            )
            verdict = judge(hub.pm, ctx)
            reasons.extend(verdict.reasons_json(ch))
            if verdict.decision != "veto":
                chosen = Plan(facts, ch, addr, postal, verdict, reasons, chans[i + 1:], practice)
                break
        if chosen is None:
            assert first is not None
            ch, addr, postal = first
            chosen = Plan(facts, ch, addr, postal, Verdict("veto", ()), reasons, [], practice)
        plans[cid] = chosen
    return plans


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


def build_communication(
    hub: Hub, *, plan: Plan, template: str, category: str, context: dict[str, Any],
    cc: Sequence[str] = (), company_id: int | None = None, practice_id: int | None = None,
    created_by: str | None = None, fallback_of_id: int | None = None,
) -> Communication:
    """The communication row for a plan: rendered when the verdict allows (no I/O)."""
    now = hub.clock.now()
    verdict = plan.verdict
    practice = plan.practice
    comm = Communication(
        practice_id=practice_id if practice_id is not None else (practice.id if practice else None),
        company_id=company_id, client_id=plan.client.id if plan.client else None,
        channel=plan.channel, category=category, template=template, address=plan.address,
        cc=list(cc) if plan.channel == "email" else [], postal_address=plan.postal,
        headers={}, verdict=verdict.decision, verdict_reasons=plan.reasons,
        fallback_channels=plan.remaining, fallback_of_id=fallback_of_id, context=context,
        created_by=created_by, created_at=now, updated_at=now,
    )
    if verdict.decision == "veto":
        comm.status = "suppressed"
        return comm
    # the hub's own keys (signed preference and unsubscribe links among them) win over the caller's
    full = {**context, **standard_context(hub, client=plan.client, practice=practice, category=category,
                                          channel=plan.channel, address=plan.address)}
    rendered = render_for(hub, template=template, channel=plan.channel, context=full, practice=practice)
    comm.subject, comm.body_text, comm.body_html = rendered.subject, rendered.text, rendered.html
    comm.postcard_front_html = rendered.postcard_front_html
    comm.postcard_back_html = rendered.postcard_back_html
    if plan.channel == "email":
        comm.headers = email_headers(hub, category=category, unsubscribe_url=full.get("unsubscribe_url"),
                                     address=plan.address)
    if verdict.decision == "defer":
        comm.status, comm.not_before = "deferred", verdict.defer_until
    else:
        comm.status = "queued"
    return comm


async def insert_communications(session: AsyncSession, hub: Hub, comms: Sequence[Communication]) -> None:
    """Insert communications, their first history row and their send jobs, in a few statements.

    The send jobs are written as :class:`hub.db.models.Job` rows exactly as
    ``hub.jobs.enqueue`` writes them (kind, payload, run_at, idempotency key
    ``communication:<id>``), batched: a campaign of thousands costs three INSERTs, not
    thousands of round trips. The keys are fresh communication ids, so they cannot collide.
    """
    if not comms:
        return
    session.add_all(comms)
    await session.flush()
    now = hub.clock.now()
    session.add_all(
        CommunicationStatus(communication_id=c.id, status=c.status, provider_status=None, applied=True,
                            at=now, detail={"verdict": c.verdict})
        for c in comms
    )
    sendable = [c for c in comms if c.status in ("queued", "deferred")]
    if len(sendable) == 1:
        c = sendable[0]
        await hub.jobs.enqueue(session, SEND_JOB, {"communication_id": c.id}, run_at=c.not_before,
                               idempotency_key=f"communication:{c.id}")
    elif sendable:
        max_attempts = hub.config.jobs.max_attempts
        session.add_all(
            Job(kind=SEND_JOB, payload={"communication_id": c.id}, status="queued",
                run_at=c.not_before or now, attempts=0, max_attempts=max_attempts,
                idempotency_key=f"communication:{c.id}", created_at=now)
            for c in sendable
        )
        hub.jobs.wake_after_commit(session)
    await session.flush()


async def record_communication(
    session: AsyncSession, hub: Hub, *, plan: Plan, template: str, category: str,
    context: dict[str, Any], cc: Sequence[str] = (), company_id: int | None = None,
    practice_id: int | None = None, created_by: str | None = None,
    fallback_of_id: int | None = None,
) -> Communication:
    """Render (when the verdict allows), insert, and enqueue the send job."""
    comm = build_communication(hub, plan=plan, template=template, category=category, context=context,
                               cc=cc, company_id=company_id, practice_id=practice_id,
                               created_by=created_by, fallback_of_id=fallback_of_id)
    await insert_communications(session, hub, [comm])
    return comm


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


async def queue_many(
    session: AsyncSession, hub: Hub, *, client_ids: Sequence[int], template: str, category: str,
    channels: Sequence[str] = ("email", "sms", "postcard"), context: dict | None = None,
    per_client_context: dict[int, dict] | None = None, created_by: str | None = None,
) -> list[Communication]:
    """Queue one message per client (a campaign), judging them all in a few queries."""
    plans = await plan_for_clients(session, hub, client_ids, category=category, channels=channels)
    missing = [cid for cid, p in plans.items() if p is None]
    if missing:
        raise MessagingError("unknown_client", f"no client with id {missing[0]}", "client_id")
    comms = []
    for cid in client_ids:
        plan = plans[cid]
        assert plan is not None
        ctx = {**(context or {}), **((per_client_context or {}).get(cid) or {})}
        comms.append(build_communication(hub, plan=plan, template=template, category=category,
                                         context=ctx, created_by=created_by))
    await insert_communications(session, hub, comms)
    return comms
