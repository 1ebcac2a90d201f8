"""Messaging HTTP: the communications API (scoped to the caller), the no-login preference page,
the RFC 8058 one-click endpoint and the optional open/click tracking routes.

Pages and one-click live outside ``/api``: they carry no bearer token and are authorised by the
signed token in their URL (:mod:`hub.messaging.links`). A GET never changes anything (mail
scanners and link prefetchers follow every URL in a message).
"""

from __future__ import annotations

import base64
import html
from typing import Any

from aiohttp import web
from sqlalchemy import select

from hub import audit
from hub.messaging import links, service
from hub.messaging.facts import load_clients, load_consent, resolve_preference
from hub.messaging.models import Communication, CommunicationStatus, InboundMessage
from hub.messaging.outbound import (
    MessagingError,
    plan_for_clients,
    queue_email,
    queue_many,
)
from hub.messaging.verdict import CHANNELS, UNSUBSCRIBABLE
from hub.web.auth import get_principal
from hub.web.errors import ApiError, json_body, not_found
from hub.web.keys import HUB_KEY

routes = web.RouteTableDef()

GIF = base64.b64decode(b"R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
CATEGORY_LABELS = {
    "reminder": "Vaccination and health reminders",
    "appointment": "Appointment reminders",
    "survey": "Surveys after a visit",
    "loyalty": "Loyalty programme news",
    "marketing": "News and offers",
}


# --------------------------------------------------------------------------- JSON shapes


def communication_json(c: Communication, history: list[CommunicationStatus] | None = None,
                       replies: list[InboundMessage] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": c.id, "client_id": c.client_id, "practice_id": c.practice_id, "company_id": c.company_id,
        "channel": c.channel, "category": c.category, "template": c.template, "address": c.address,
        "cc": c.cc, "postal_address": c.postal_address, "status": c.status, "verdict": c.verdict,
        "reasons": c.verdict_reasons, "provider_id": c.provider_id, "subject": c.subject,
        "text": c.body_text, "html": c.body_html, "fallback_of_id": c.fallback_of_id,
        "not_before": c.not_before.isoformat() if c.not_before else None,
        "last_error": c.last_error, "created_at": c.created_at.isoformat(),
        "sent_at": c.sent_at.isoformat() if c.sent_at else None,
    }
    if history is not None:
        out["history"] = [{"status": h.status, "provider_status": h.provider_status, "applied": h.applied,
                           "at": h.at.isoformat(), "detail": h.detail} for h in history]
    if replies is not None:
        out["replies"] = [{"id": r.id, "channel": r.channel, "from": r.from_address, "body": r.body,
                           "received_at": r.received_at.isoformat()} for r in replies]
    return out


def _api_error(err: MessagingError) -> ApiError:
    status = 404 if err.code == "unknown_client" else 422
    return ApiError(status, err.code, err.message, err.field)


def _int(value: Any, field: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ApiError(400, "invalid", f"{field} must be an integer", field) from None


async def _client_practice(session, client_id: int) -> int | None:
    clients = await load_clients(session, [client_id])
    if client_id not in clients:
        raise not_found(f"client {client_id}")
    return clients[client_id][0].practice_id


async def _require_practice(principal, session, practice_id: int | None) -> None:
    if practice_id is None:
        if not principal.is_operator:
            raise ApiError(403, "forbidden", "only operators may send without a practice")
        return
    if not await principal.can_access_practice(session, practice_id):
        raise not_found(f"practice {practice_id}")


def _channels(body: dict[str, Any]) -> list[str]:
    if "channel" in body and body["channel"]:
        return [str(body["channel"])]
    chans = body.get("channels") or list(CHANNELS)
    if not isinstance(chans, list):
        raise ApiError(400, "invalid", "channels must be a list", "channels")
    return [str(c) for c in chans]


# --------------------------------------------------------------------------- API


@routes.post("/api/communications")
async def create_communication(request: web.Request) -> web.Response:
    """Send one message: to a client (``client_id``, channel order with fallback) or to an
    email address (``to``)."""
    hub = request.app[HUB_KEY]
    principal = get_principal(request)
    body = await json_body(request)
    template = body.get("template")
    category = body.get("category")
    if not template or not isinstance(template, str):
        raise ApiError(400, "invalid", "template is required", "template")
    if not category or not isinstance(category, str):
        raise ApiError(400, "invalid", "category is required", "category")
    context = body.get("context") or {}
    if not isinstance(context, dict):
        raise ApiError(400, "invalid", "context must be an object", "context")
    async with hub.transaction() as session:
        try:
            if body.get("client_id") is not None:
                client_id = _int(body["client_id"], "client_id")
                practice_id = await _client_practice(session, client_id)
                await _require_practice(principal, session, practice_id)
                [comm] = await queue_many(session, hub, client_ids=[client_id], template=template,
                                          category=category, channels=_channels(body), context=context,
                                          created_by=principal.actor)
            elif body.get("to"):
                practice_id = _int(body["practice_id"], "practice_id") if body.get("practice_id") is not None else None
                await _require_practice(principal, session, practice_id)
                cc = body.get("cc") or []
                if not isinstance(cc, list):
                    raise ApiError(400, "invalid", "cc must be a list", "cc")
                comm = await queue_email(session, hub, to=str(body["to"]), template=template,
                                         context=context, category=category, cc=[str(c) for c in cc],
                                         practice_id=practice_id,
                                         company_id=principal.company_id if principal.role == "company_admin" else None)
                comm.created_by = principal.actor
            else:
                raise ApiError(400, "invalid", "give client_id or to", "client_id")
        except MessagingError as err:
            raise _api_error(err) from err
        await audit.record(session, principal.actor, "communication.create", "communication", comm.id,
                           after={"channel": comm.channel, "status": comm.status, "template": template},
                           practice_id=comm.practice_id, company_id=comm.company_id)
    return web.json_response(communication_json(comm), status=201)


@routes.post("/api/communications/preview")
async def preview(request: web.Request) -> web.Response:
    """The audience with each verdict and its reasons; nothing is recorded or sent."""
    hub = request.app[HUB_KEY]
    principal = get_principal(request)
    body = await json_body(request)
    category = body.get("category")
    if not category or not isinstance(category, str):
        raise ApiError(400, "invalid", "category is required", "category")
    ids = body.get("client_ids")
    if not isinstance(ids, list) or not ids:
        raise ApiError(400, "invalid", "client_ids must be a non-empty list", "client_ids")
    client_ids = [_int(i, "client_ids") for i in ids]
    async with hub.sessionmaker() as session:
        allowed = await principal.practice_ids(session)
        try:
            plans = await plan_for_clients(session, hub, client_ids, category=category, channels=_channels(body))
        except MessagingError as err:
            raise _api_error(err) from err
        items = []
        for cid in client_ids:
            plan = plans.get(cid)
            if plan is None or (allowed is not None and plan.client and plan.client.practice_id not in allowed):
                items.append({"client_id": cid, "decision": "veto", "channel": None,
                              "reasons": [{"code": "unknown_client", "message": "no such client"}]})
                continue
            items.append({"client_id": cid, "name": plan.client.name if plan.client else None,
                          "channel": plan.channel if plan.verdict.decision != "veto" else None,
                          "decision": plan.verdict.decision, "address": plan.address or None,
                          "defer_until": plan.verdict.defer_until.isoformat() if plan.verdict.defer_until else None,
                          "reasons": plan.reasons})
    return web.json_response({"items": items})


@routes.get("/api/clients/{client_id}/communications")
async def client_communications(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    principal = get_principal(request)
    client_id = _int(request.match_info["client_id"], "client_id")
    async with hub.sessionmaker() as session:
        practice_id = await _client_practice(session, client_id)
        if practice_id is None or not await principal.can_access_practice(session, practice_id):
            raise not_found(f"client {client_id}")
        comms = list((await session.execute(
            select(Communication).where(Communication.client_id == client_id).order_by(Communication.id.desc())
        )).scalars())
        ids = [c.id for c in comms]
        history: dict[int, list[CommunicationStatus]] = {i: [] for i in ids}
        replies: dict[int, list[InboundMessage]] = {i: [] for i in ids}
        if ids:
            for h in (await session.execute(select(CommunicationStatus).where(
                    CommunicationStatus.communication_id.in_(ids)).order_by(CommunicationStatus.id))).scalars():
                history[h.communication_id].append(h)
            for r in (await session.execute(select(InboundMessage).where(
                    InboundMessage.communication_id.in_(ids)).order_by(InboundMessage.id))).scalars():
                replies[r.communication_id].append(r)
        unlinked = list((await session.execute(select(InboundMessage).where(
            InboundMessage.client_id == client_id, InboundMessage.communication_id.is_(None)))).scalars())
    return web.json_response({
        "items": [communication_json(c, history[c.id], replies[c.id]) for c in comms],
        "unlinked_replies": [{"id": r.id, "channel": r.channel, "from": r.from_address, "body": r.body,
                              "received_at": r.received_at.isoformat()} for r in unlinked],
    })


@routes.post("/api/clients/{client_id}/consent")
async def set_consent(request: web.Request) -> web.Response:
    """A staff edit of a client's preference: ``{"category", "channel", "allowed"}``."""
    hub = request.app[HUB_KEY]
    principal = get_principal(request)
    client_id = _int(request.match_info["client_id"], "client_id")
    body = await json_body(request)
    category, channel = str(body.get("category", "*")), str(body.get("channel", "*"))
    if category != "*" and category not in UNSUBSCRIBABLE | {"account"}:
        raise ApiError(422, "unknown_category", f"unknown category {category!r}", "category")
    if channel != "*" and channel not in CHANNELS:
        raise ApiError(422, "unknown_channel", f"unknown channel {channel!r}", "channel")
    if not isinstance(body.get("allowed"), bool):
        raise ApiError(400, "invalid", "allowed must be true or false", "allowed")
    async with hub.transaction() as session:
        practice_id = await _client_practice(session, client_id)
        if practice_id is None or not await principal.can_access_practice(session, practice_id):
            raise not_found(f"client {client_id}")
        row = await service.record_consent(session, hub, client_id=client_id, category=category,
                                           channel=channel, allowed=body["allowed"], source="staff",
                                           actor=principal.actor, practice_id=practice_id,
                                           detail=str(body.get("detail", "")))
    return web.json_response({"id": row.id, "client_id": client_id, "category": category,
                              "channel": channel, "allowed": row.allowed, "source": "staff"}, status=201)


# --------------------------------------------------------------------------- pages


def _page(title: str, body: str, status: int = 200, practice: str | None = None) -> web.Response:
    """A public page in the console's look, saying which practice it is for."""
    who = f" · {html.escape(practice)}" if practice else ""
    doc = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><meta name='robots' content='noindex'>"
           f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{html.escape(title)}</title>"
           "<link rel='stylesheet' href='/console/static/console.css'></head><body>"
           f"<header class='top'><p class='brand'>Messages{who}</p></header>"
           f"<main id='main' class='public'><h1>{html.escape(title)}</h1>"
           + (f"<p>For clients of <strong>{html.escape(practice)}</strong>.</p>" if practice else "")
           + f"{body}</main><footer><p>Sent on behalf of {html.escape(practice or 'your practice')}</p></footer>"
           "</body></html>")
    return web.Response(text=doc, content_type="text/html", status=status,
                        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
                                 "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; "
                                                            "form-action 'self'; base-uri 'none'",
                                 "X-Content-Type-Options": "nosniff"})


async def _practice_name(hub: Any, client_id: Any) -> str | None:
    from hub.db.models import Practice

    if client_id is None:
        return None
    async with hub.sessionmaker() as session:
        clients = await load_clients(session, [int(client_id)])
        if int(client_id) not in clients:
            return None
        practice = await session.get(Practice, clients[int(client_id)][0].practice_id)
        return practice.name if practice else None


def _verify(request: web.Request, purpose: str) -> dict[str, Any]:
    hub = request.app[HUB_KEY]
    try:
        return links.verify(links.secret_of(hub), purpose, request.match_info["token"], hub.clock.now())
    except links.BadToken as err:
        raise web.HTTPNotFound(text=f"this link is not valid ({err})") from err


@routes.get("/messaging/preferences/{token}")
async def preferences_page(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    data = _verify(request, "prefs")
    client_id = int(data["c"])
    async with hub.sessionmaker() as session:
        clients = await load_clients(session, [client_id])
        if client_id not in clients:
            raise web.HTTPNotFound(text="this link is not valid")
        rows = (await load_consent(session, [client_id])).get(client_id, [])
    facts = clients[client_id][0]
    saved = "<p><strong>Your choices are saved.</strong></p>" if request.query.get("saved") else ""
    boxes = []
    for cat, label in CATEGORY_LABELS.items():
        allowed, _ = resolve_preference(rows, cat, "*")
        checked = "" if allowed is False else " checked"
        boxes.append(f"<label><input type='checkbox' name='keep' value='{cat}'{checked}> {html.escape(label)}</label>")
    return _page(
        "Your message preferences", practice=await _practice_name(hub, client_id), body=
        f"{saved}<p>Hello {html.escape(facts.name)}. Tick the messages you want to keep receiving.</p>"
        f"<form method='post'>{''.join(boxes)}<p><button type='submit'>Save</button></p></form>"
        "<p><small>Account and appointment confirmations you asked for are always sent.</small></p>",
    )


@routes.post("/messaging/preferences/{token}")
async def preferences_save(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    data = _verify(request, "prefs")
    client_id = int(data["c"])
    form = await request.post()
    keep = set(form.getall("keep", []))
    async with hub.transaction() as session:
        clients = await load_clients(session, [client_id])
        if client_id not in clients:
            raise web.HTTPNotFound(text="this link is not valid")
        rows = (await load_consent(session, [client_id])).get(client_id, [])
        practice_id = clients[client_id][0].practice_id
        for cat in CATEGORY_LABELS:
            want = cat in keep
            current, _ = resolve_preference(rows, cat, "*")
            if (current is None and want) or current == want:
                continue
            await service.record_consent(session, hub, client_id=client_id, category=cat, channel="*",
                                         allowed=want, source="preference_page", practice_id=practice_id)
    raise web.HTTPSeeOther(location=f"{request.path}?saved=1")


@routes.get("/messaging/unsubscribe/{token}")
async def unsubscribe_page(request: web.Request) -> web.Response:
    """What a person sees when they open the link: a button, not an unsubscription."""
    data = _verify(request, "unsub")
    label = CATEGORY_LABELS.get(str(data.get("g")), "these messages")
    return _page(
        "Unsubscribe", practice=await _practice_name(request.app[HUB_KEY], data.get("c")), body=
        f"<p>Stop receiving <strong>{html.escape(label.lower())}</strong> at "
        f"{html.escape(str(data.get('a', '')))}?</p>"
        "<form method='post'><input type='hidden' name='List-Unsubscribe' value='One-Click'>"
        "<button type='submit'>Unsubscribe</button></form>",
    )


@routes.post("/messaging/unsubscribe/{token}")
async def one_click(request: web.Request) -> web.Response:
    """RFC 8058: ``List-Unsubscribe=One-Click`` as multipart/form-data or urlencoded."""
    hub = request.app[HUB_KEY]
    data = _verify(request, "unsub")
    form = await request.post()
    if form.get("List-Unsubscribe") != "One-Click":
        raise web.HTTPBadRequest(text="expected List-Unsubscribe=One-Click")
    category = str(data.get("g"))
    address = str(data.get("a", ""))
    async with hub.transaction() as session:
        if data.get("c") is not None:
            client_id = int(data["c"])
            clients = await load_clients(session, [client_id])
            practice_id = clients[client_id][0].practice_id if client_id in clients else None
            await service.record_consent(session, hub, client_id=client_id, category=category, channel="email",
                                         allowed=False, source="one_click", practice_id=practice_id,
                                         detail=f"List-Unsubscribe one-click for {address}")
        else:
            await service.set_address_opt_out(session, hub, kind="email", address=address, opted_out=True,
                                              source="one_click", detail=f"category {category}")
    if request.headers.get("Accept", "").startswith("text/html"):
        return _page("Unsubscribed", "<p>You will not receive these messages any more.</p>",
                     practice=await _practice_name(hub, data.get("c")))
    return web.Response(text="unsubscribed\n")


# --------------------------------------------------------------------------- tracking


async def _track(request: web.Request, purpose: str, status: str) -> dict[str, Any] | None:
    hub = request.app[HUB_KEY]
    try:
        data = links.verify(links.secret_of(hub), purpose, request.match_info["token"], hub.clock.now())
    except links.BadToken:
        return None
    async with hub.transaction() as session:
        comm = await session.get(Communication, int(data["m"]))
        if comm is not None:
            await service.apply_status(session, hub, comm, status, provider_status=f"tracking:{status}",
                                       detail={"user_agent": request.headers.get("User-Agent", "")[:200]})
    return data


@routes.get("/messaging/t/o/{token}.gif")
async def open_pixel(request: web.Request) -> web.Response:
    await _track(request, "open", "opened")
    return web.Response(body=GIF, content_type="image/gif", headers={"Cache-Control": "no-store"})


@routes.get("/messaging/t/c/{token}")
async def click(request: web.Request) -> web.Response:
    data = await _track(request, "click", "clicked")
    if data is None or not str(data.get("u", "")).startswith(("http://", "https://")):
        raise web.HTTPNotFound(text="this link is not valid")
    raise web.HTTPFound(location=str(data["u"]))
