"""Messaging HTTP: the communications API (scoped to the caller), the no-login preference page,
the RFC 8058 one-click endpoint and the optional open/click tracking routes.

Pages and one-click live outside ``/api``: they carry no bearer token and are authorised by the
signed token in their URL (:mod:`hub.messaging.links`). A GET never changes anything (mail
scanners and link prefetchers follow every URL in a message).
"""

from __future__ import annotations

import base64
import html
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import Field, StrictBool
from sqlalchemy import select

from hub import audit
from hub.auth import Principal
from hub.db.models import Practice
from hub.errors import Forbidden, Invalid, NotFound
from hub.messaging import links, service
from hub.messaging.facts import load_clients, load_consent, resolve_preference
from hub.messaging.models import Communication, CommunicationStatus, InboundMessage
from hub.messaging.outbound import (
    HUB_KEYS,
    INTERNAL_TEMPLATES,
    MessagingError,
    plan_for_clients,
    queue_email,
    queue_many,
)
from hub.messaging.verdict import CHANNELS
from hub.web.auth import get_principal
from hub.web.contract import ApiRoutes, Id, RequestModel
from hub.web.errors import ApiError
from hub.web.keys import HUB_KEY

api = ApiRoutes(tag="messaging")
pages = web.RouteTableDef()

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
    if err.code == "unknown_client":  # one answer for a missing client, whoever asks
        return ApiError(404, "not_found", "client not found", "client_id")
    return ApiError(status, err.code, err.message, err.field)


async def _scoped_client_practice(session: Any, principal: Principal, client_id: int) -> int | None:
    """The client's practice; a client of another tenant answers exactly like a missing one."""
    clients = await load_clients(session, [client_id])
    practice_id = clients[client_id][0].practice_id if client_id in clients else None
    if client_id not in clients or (
            not principal.is_operator
            and (practice_id is None or not await principal.can_access_practice(session, practice_id))):
        raise NotFound("client not found", field="client_id")
    return practice_id


Category = Literal["reminder", "appointment", "survey", "loyalty", "marketing", "account"]
Channel = Literal["email", "sms", "postcard"]
Email = Annotated[str, Field(min_length=3, max_length=320)]


class CommunicationCreate(RequestModel):
    """Body that sends one message from a template to a client or an address."""
    template: str = Field(min_length=1, max_length=100)
    category: Category
    client_id: Id | None = None
    to: Email | None = None
    practice_id: Id | None = None
    cc: list[Email] = Field(default_factory=list, max_length=10)
    channel: Channel | None = None
    channels: list[Channel] | None = Field(default=None, min_length=1, max_length=3)
    context: dict[str, Any] = Field(default_factory=dict, max_length=100)


class PreviewRequest(RequestModel):
    """Body asking which of these clients a message would reach, on which channel; sends nothing."""
    category: Category
    client_ids: list[Id] = Field(min_length=1, max_length=1000)
    channel: Channel | None = None
    channels: list[Channel] | None = Field(default=None, min_length=1, max_length=3)


class ClientPath(RequestModel):
    """Path parameters of the routes about one client's communications."""
    client_id: Id


class ConsentCreate(RequestModel):
    """Body that records a client's consent or refusal for a category and channel ("*": all)."""
    category: Literal["*", "reminder", "appointment", "survey", "loyalty", "marketing", "account"] = "*"
    channel: Literal["*", "email", "sms", "postcard"] = "*"
    allowed: StrictBool
    detail: str = Field(default="", max_length=1000)


def _channels(body: CommunicationCreate | PreviewRequest) -> list[str]:
    if body.channel:
        return [body.channel]
    return list(body.channels or CHANNELS)


def _check_send(principal: Principal, body: CommunicationCreate) -> None:
    """What the public API refuses whoever the recipient is."""
    if body.template in INTERNAL_TEMPLATES:
        raise Invalid(f"template {body.template!r} is sent by the hub itself, not through this API",
                      code="internal_template", field="template")
    if body.category == "account" and (body.client_id is not None or principal.role == "practice_staff"):
        raise Invalid("category 'account' is operational mail between the hub, practices and "
                      "companies; it is never sent to a client", code="account_to_client", field="category")
    reserved = sorted(HUB_KEYS & set(body.context))
    if reserved:
        raise Invalid(f"context may not set the hub's own keys: {', '.join(reserved)}",
                      code="reserved_context", field=f"context.{reserved[0]}")


# --------------------------------------------------------------------------- API


@api.post("/api/communications", summary="Send one message", body=CommunicationCreate, status=201,
          errors=(403, 404, 413, 422), max_body=64 * 1024)
async def create_communication(request: web.Request, body: CommunicationCreate) -> dict[str, Any]:
    """Send one message: to a client (``client_id``, channel order with fallback) or, for an
    operator, to an email address (``to``)."""
    hub = request.app[HUB_KEY]
    principal = get_principal(request)
    _check_send(principal, body)
    async with hub.transaction() as session:
        try:
            if body.client_id is not None:
                await _scoped_client_practice(session, principal, body.client_id)
                [comm] = await queue_many(session, hub, client_ids=[body.client_id], template=body.template,
                                          category=body.category, channels=_channels(body),
                                          context=body.context, created_by=principal.actor)
            elif body.to:
                if not principal.is_operator:
                    raise Forbidden("sending to an address that is not a client is for operators",
                                    code="operators_only", field="to")
                if body.practice_id is not None and await session.get(Practice, body.practice_id) is None:
                    raise NotFound("practice not found", field="practice_id")
                comm = await queue_email(session, hub, to=body.to, template=body.template,
                                         context=body.context, category=body.category, cc=body.cc,
                                         practice_id=body.practice_id)
                comm.created_by = principal.actor
            else:
                raise Invalid("give client_id or to", code="invalid", field="client_id")
        except MessagingError as err:
            raise _api_error(err) from err
        await audit.record(session, principal.actor, "communication.create", "communication", comm.id,
                           after={"channel": comm.channel, "status": comm.status, "template": body.template},
                           practice_id=comm.practice_id, company_id=comm.company_id)
    return communication_json(comm)


@api.post("/api/communications/preview", summary="Who would get a message, and why",
          body=PreviewRequest, errors=(422,), max_body=64 * 1024)
async def preview(request: web.Request, body: PreviewRequest) -> dict[str, Any]:
    """The audience with each verdict and its reasons; nothing is recorded or sent."""
    hub = request.app[HUB_KEY]
    principal = get_principal(request)
    client_ids = list(body.client_ids)
    async with hub.sessionmaker() as session:
        allowed = await principal.practice_ids(session)
        try:
            plans = await plan_for_clients(session, hub, client_ids, category=body.category,
                                           channels=_channels(body))
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
    return {"items": items}


@api.get("/api/clients/{client_id}/communications", summary="A client's messages and replies",
         path_params=ClientPath, errors=(404, 422))
async def client_communications(request: web.Request, path: ClientPath) -> dict[str, Any]:
    hub = request.app[HUB_KEY]
    principal = get_principal(request)
    client_id = path.client_id
    async with hub.sessionmaker() as session:
        await _scoped_client_practice(session, principal, client_id)
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
                assert r.communication_id is not None  # selected by communication_id IN ids
                replies[r.communication_id].append(r)
        unlinked = list((await session.execute(select(InboundMessage).where(
            InboundMessage.client_id == client_id, InboundMessage.communication_id.is_(None)))).scalars())
    return {
        "items": [communication_json(c, history[c.id], replies[c.id]) for c in comms],
        "unlinked_replies": [{"id": r.id, "channel": r.channel, "from": r.from_address, "body": r.body,
                              "received_at": r.received_at.isoformat()} for r in unlinked],
    }


@api.post("/api/clients/{client_id}/consent", summary="Record a staff edit of a client's preference",
          path_params=ClientPath, body=ConsentCreate, status=201, errors=(404, 422), max_body=4096)
async def set_consent(request: web.Request, path: ClientPath, body: ConsentCreate) -> dict[str, Any]:
    """A staff edit of a client's preference: ``{"category", "channel", "allowed"}``."""
    hub = request.app[HUB_KEY]
    principal = get_principal(request)
    async with hub.transaction() as session:
        practice_id = await _scoped_client_practice(session, principal, path.client_id)
        row = await service.record_consent(session, hub, client_id=path.client_id, category=body.category,
                                           channel=body.channel, allowed=body.allowed, source="staff",
                                           actor=principal.actor, practice_id=practice_id, detail=body.detail)
    return {"id": row.id, "client_id": path.client_id, "category": body.category,
            "channel": body.channel, "allowed": row.allowed, "source": "staff"}


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


@pages.get("/messaging/preferences/{token}")
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


@pages.post("/messaging/preferences/{token}")
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


@pages.get("/messaging/unsubscribe/{token}")
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


@pages.post("/messaging/unsubscribe/{token}")
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


@pages.get("/messaging/t/o/{token}.gif")
async def open_pixel(request: web.Request) -> web.Response:
    await _track(request, "open", "opened")
    return web.Response(body=GIF, content_type="image/gif", headers={"Cache-Control": "no-store"})


@pages.get("/messaging/t/c/{token}")
async def click(request: web.Request) -> web.Response:
    data = await _track(request, "click", "clicked")
    if data is None or not str(data.get("u", "")).startswith(("http://", "https://")):
        raise web.HTTPNotFound(text="this link is not valid")
    raise web.HTTPFound(location=str(data["u"]))


#: Everything this module serves: the declared API and the token pages.
routes: list[web.AbstractRouteDef] = [*api, *pages]
