"""Plain HTML pages outside /api (no login): the account request form, completing a request,
setting a password, and the current company's approve/object page behind a signed link.

Links in emails open a page with a button (GET never changes anything: mail scanners follow
links); the button POSTs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.accounts import onboarding, switching
from hub.accounts.api import limiters
from hub.accounts.links import LinkError, parse_expires, verify_consent, verify_response
from hub.accounts.models import AccountRequest, SwitchRequest
from hub.accounts.schemas import PUBLIC_MAX_BODY, AccountRequestFields
from hub.db.models import Company, Practice
from hub.db.types import id_value
from hub.errors import DomainError, NotFound
from hub.web.auth import client_address
from hub.web.contract import RequestModel, invalid_from
from hub.web.keys import HUB_KEY

if TYPE_CHECKING:
    from hub.core import Hub

_env = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates" / "pages"),
    autoescape=select_autoescape(("html", "j2")),
)

FORM_FIELDS = (
    ("practice_name", "Practice name", "text"),
    ("contact_name", "Contact name", "text"),
    ("email", "Email", "email"),
    ("phone", "Phone", "tel"),
    ("address.line1", "Address", "text"),
    ("address.city", "City", "text"),
    ("address.postcode", "Postcode", "text"),
    ("address.country", "Country (2 letters)", "text"),
    ("pims", "Practice-management system (PIMS)", "text"),
    ("imaging_software", "Imaging software", "text"),
    ("modalities", "Modalities (e.g. DX, US, CT)", "text"),
)


#: The console's headers: these pages use its stylesheet and nothing inline.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
                               "object-src 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the URL carries a single-use token
    "Cache-Control": "no-store",
}


def _is_id(value: str) -> bool:
    return id_value(value) is not None


async def _small_form(request: web.Request) -> Any:
    """The posted form, or None when it is over the public request's size limit."""
    if request.content_length is None or request.content_length > PUBLIC_MAX_BODY:
        return None
    return await request.post()


def _validate(model: type[RequestModel], data: dict[str, Any]) -> None:
    """The same limits as the JSON API's, shown on the form."""
    try:
        model.model_validate(data)
    except ValidationError as err:
        raise invalid_from(err, "form") from None


def page(template: str, status: int = 200, **context: Any) -> web.Response:
    context.setdefault("for_whom", None)
    context.setdefault("link", None)
    html = _env.get_template(template).render(**context)
    return web.Response(text=html, content_type="text/html", charset="utf-8", status=status, headers=HEADERS)


async def _password_owner(hub: Hub, token: str) -> tuple[str | None, str | None]:
    """The email and practice (or company) a set-password link is for, to say so on the page."""
    from hub.accounts.links import hash_secret
    from hub.accounts.models import PasswordSetToken
    from hub.db.models import User

    async with hub.sessionmaker() as session:
        row = (await session.execute(select(PasswordSetToken).where(
            PasswordSetToken.token_hash == hash_secret(token)))).scalar_one_or_none()
        user = await session.get(User, row.user_id) if row is not None else None
        if user is None:
            return None, None
        tenant = (await session.get(Practice, user.practice_id) if user.practice_id else
                  await session.get(Company, user.company_id) if user.company_id else None)
        return user.email, tenant.name if tenant else None


def form_to_data(form: Any) -> dict[str, Any]:
    data: dict[str, Any] = {}
    address: dict[str, str] = {}
    for key, value in form.items():
        value = str(value).strip()
        if key.startswith("address."):
            if value:
                address[key.split(".", 1)[1]] = value
        elif key.startswith("extra."):
            data.setdefault("extra", {})[key.split(".", 1)[1]] = value
        elif key not in ("token",) and value:
            data[key] = value
    if address:
        data["address"] = address
    return data


routes = web.RouteTableDef()


def _message(title: str, message: str, status: int = 200, **context: Any) -> web.Response:
    return page("message.html.j2", status=status, title=title, message=message, **context)


def _not_found() -> web.Response:
    return _message("Not found", "This link is not valid.", 404)


def _too_large() -> web.Response:
    return _message("Too large", "This form is too large.", 413)


def _bad_link(err: ValueError) -> web.Response:
    expired = isinstance(err, LinkError) and err.code == "link_expired"
    return _message("Link not valid", str(err), 410 if expired else 403)


async def _companies(hub: Hub) -> list[Company]:
    async with hub.sessionmaker() as session:
        return list((await session.execute(select(Company).order_by(Company.name))).scalars())


async def _request_form(hub: Hub, status: int = 200, values: dict[str, Any] | None = None,
                        error: str | None = None) -> web.Response:
    return page("request_form.html.j2", status=status, fields=FORM_FIELDS, companies=await _companies(hub),
                values=values or {}, error=error, hub_name=hub.config.hub.name)


def _outcome(req: AccountRequest) -> tuple[str, list[str]]:
    """What the "done" page says of a request: read inside its transaction."""
    return req.state, [onboarding.label(m) for m in req.missing_fields]


def _request_done(hub: Hub, outcome: tuple[str, list[str]]) -> web.Response:
    state, missing = outcome
    return page("request_done.html.j2", state=state, missing=missing, hub_name=hub.config.hub.name)


# --- asking for an account -----------------------------------------------------------------------


@routes.get("/account-request")
async def request_form(request: web.Request) -> web.Response:
    return await _request_form(request.app[HUB_KEY])


@routes.post("/account-request")
async def request_submit(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    # the same budget as the JSON API's: one address gets one allowance for both
    if limiters(hub).requests.check(client_address(request)) is not None:
        return _message("Too many requests",
                        "Too many account requests from this address; please try again later.", 429)
    form = await _small_form(request)
    if form is None:
        return _too_large()
    data = form_to_data(form)
    try:
        _validate(AccountRequestFields, data)
        async with hub.transaction() as session:
            req, _ = await onboarding.submit_request(session, hub, data)
            outcome = _outcome(req)
    except DomainError as err:
        return await _request_form(hub, err.status, dict(form), err.message)
    return _request_done(hub, outcome)


# --- completing a request ------------------------------------------------------------------------


def _missing_form_fields(missing: set[str]) -> tuple[list[tuple[str, str, str]], list[str]]:
    """The form's fields still missing, and the other missing names (a company's own questions)."""
    fields = [f for f in FORM_FIELDS if f[0] in missing or f[0].split(".")[0] in missing]
    extra = [m for m in missing if m not in {f[0] for f in FORM_FIELDS} and m.split(".")[0] not in
             {f[0].split(".")[0] for f in FORM_FIELDS} and m != "company"]
    return fields, extra


@routes.get("/account-requests/{id}/complete")
async def complete_form(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    raw_id = request.match_info["id"]
    async with hub.sessionmaker() as session:
        req = await session.get(AccountRequest, int(raw_id)) if _is_id(raw_id) else None
    token = request.query.get("token", "")
    if req is None or req.completion_token_hash != onboarding.hash_secret(token):
        return _not_found()
    missing = set(req.missing_fields or [])
    fields, extra = _missing_form_fields(missing)
    async with hub.sessionmaker() as session:
        company = await session.get(Company, req.company_id) if req.company_id else None
    return page("complete_form.html.j2", req=req, token=token, fields=fields, extra=extra,
                labels=onboarding.label, hub_name=hub.config.hub.name, for_whom=req.practice_name,
                question=(req.extra or {}).get("company_question") if "answer" in missing else None,
                company_name=company.name if company else None)


@routes.post("/account-requests/{id}/complete")
async def complete_submit(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    form = await _small_form(request)
    if form is None:
        return _too_large()
    data = form_to_data(form)
    if not _is_id(request.match_info["id"]):
        return _not_found()
    request_id = int(request.match_info["id"])
    try:
        _validate(AccountRequestFields, data)
        async with hub.transaction() as session:
            req = await session.get(AccountRequest, request_id)
            if req is not None and data.get("address"):  # a partial address adds to the one given
                data["address"] = {**(req.address or {}), **data["address"]}
            req = await onboarding.complete_request(session, hub, request_id, str(form.get("token", "")), data)
            outcome = _outcome(req)
    except DomainError as err:
        return _message("Not saved", err.message, err.status)
    return _request_done(hub, outcome)


# --- setting a password --------------------------------------------------------------------------


async def _password_form(hub: Hub, token: str, status: int = 200, error: str | None = None) -> web.Response:
    email, for_whom = await _password_owner(hub, token)
    return page("password_form.html.j2", status=status, token=token, error=error, email=email,
                for_whom=for_whom, hub_name=hub.config.hub.name)


@routes.get("/set-password")
async def password_form(request: web.Request) -> web.Response:
    return await _password_form(request.app[HUB_KEY], request.query.get("token", ""))


@routes.post("/set-password")
async def password_submit(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    form = await request.post()
    token = str(form.get("token", ""))
    try:
        async with hub.transaction() as session:
            await onboarding.set_password(session, hub, token, str(form.get("password", "")))
    except DomainError as err:
        return await _password_form(hub, token, err.status, err.message)
    return _message("Password set", "Your password is set; you can sign in now.",
                    link=("/console/sign-in", "Sign in"), hub_name=hub.config.hub.name)


# --- the current company answers a switch request ------------------------------------------------


@dataclass(frozen=True)
class _SwitchLink:
    switch_id: int
    action: str
    expires: int
    sig: str


def _switch_link(hub: Hub, raw_id: str, q: Mapping[str, Any]) -> _SwitchLink:
    """The signed response link's parts; LinkError when forged, altered or expired."""
    if not _is_id(raw_id):
        raise LinkError("bad_signature", "this link is not valid")
    link = _SwitchLink(int(raw_id), str(q.get("action", "")), parse_expires(str(q.get("expires", ""))),
                       str(q.get("sig", "")))
    verify_response(hub.config.hub.secret_key.get_secret_value(), link.switch_id, link.action, link.expires,
                    link.sig, hub.clock.now())
    return link


@routes.get("/switch-requests/{id}/respond")
async def respond_form(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    try:
        link = _switch_link(hub, request.match_info["id"], request.query)
    except ValueError as err:
        return _bad_link(err)
    async with hub.sessionmaker() as session:
        sr = await session.get(SwitchRequest, link.switch_id)
        if sr is None:  # signed by this hub for a request it no longer has
            return _message("Link not valid", "This switch request no longer exists.", 404)
        practice = await session.get(Practice, sr.practice_id)
        new = await session.get(Company, sr.new_company_id)
        assert practice is not None  # the request's practice (a foreign key)
    return page("respond.html.j2", sr=sr, practice=practice, new=new, action=link.action,
                expires=link.expires, sig=link.sig, for_whom=practice.name, hub_name=hub.config.hub.name)


@routes.post("/switch-requests/{id}/respond")
async def respond_submit(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    form = await request.post()
    try:
        link = _switch_link(hub, request.match_info["id"], form)
    except ValueError as err:
        return _bad_link(err)
    try:
        async with hub.transaction() as session:
            decision = await switching.record_response(session, hub, link.switch_id, link.action,
                                                       note=str(form.get("note", ""))[:2000])
    except DomainError as err:
        return _message("Not recorded", err.message, err.status)
    return _message("Answer recorded", f"Thank you: your answer ({link.action}) is recorded. Outcome: "
                                       f"{decision.outcome.value.replace('_', ' ')}.")


# --- a known practice confirms an account with a new company -------------------------------------


async def _consented(session: AsyncSession, hub: Hub, raw_id: str,
                     q: Mapping[str, Any]) -> tuple[AccountRequest, int, int, str]:
    """The request, the practice its signed link vouches for, the expiry and the signature;
    LinkError when the link is forged, altered or expired."""
    req = await session.get(AccountRequest, int(raw_id)) if _is_id(raw_id) else None
    if req is None or req.practice_id is None:
        raise LinkError("bad_signature", "this link is not valid")
    expires, sig = parse_expires(str(q.get("expires", ""))), str(q.get("sig", ""))
    verify_consent(hub.config.hub.secret_key.get_secret_value(), req.id, req.practice_id, expires, sig,
                   hub.clock.now())
    return req, req.practice_id, expires, sig


@routes.get("/account-requests/{id}/confirm")
async def confirm_form(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    async with hub.sessionmaker() as session:
        try:
            req, practice_id, expires, sig = await _consented(session, hub, request.match_info["id"],
                                                              request.query)
        except LinkError as err:
            return _bad_link(err)
        practice = await session.get(Practice, practice_id)
        company = await session.get(Company, req.company_id)
        return page("confirm.html.j2", req=req, practice=practice, company=company, expires=expires, sig=sig)


@routes.post("/account-requests/{id}/confirm")
async def confirm_submit(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    form = await request.post()
    async with hub.sessionmaker() as session:
        try:
            req, practice_id, _, _ = await _consented(session, hub, request.match_info["id"], form)
        except LinkError as err:
            return _bad_link(err)
    try:
        async with hub.transaction() as session:
            fresh = await session.get(AccountRequest, req.id)
            if fresh is None:
                raise NotFound.of("account request")
            await onboarding.confirm_by_practice(session, hub, fresh, practice_id=practice_id,
                                                 actor=f"practice:{practice_id}:link")
    except DomainError as err:
        return _message("Not confirmed", err.message, err.status)
    return _message("Account confirmed", "Thank you: the account is confirmed; a welcome email follows.")
