"""Plain HTML pages outside /api (no login): the account request form, completing a request,
setting a password, and the current company's approve/object page behind a signed link.

Links in emails open a page with a button (GET never changes anything: mail scanners follow
links); the button POSTs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import ValidationError
from sqlalchemy import select

from hub.accounts import onboarding, switching
from hub.accounts.links import LinkError, parse_expires, verify_consent, verify_response
from hub.accounts.models import AccountRequest, SwitchRequest
from hub.accounts.schemas import PUBLIC_MAX_BODY, AccountRequestFields
from hub.db.models import Company, Practice
from hub.db.types import id_value
from hub.errors import DomainError, NotFound
from hub.web.auth import client_address
from hub.web.contract import RequestModel, invalid_from
from hub.web.keys import HUB_KEY

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


async def _password_owner(hub: Any, token: str) -> tuple[str | None, str | None]:
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


def routes(hub: Any, limiter: Any = None) -> list[web.RouteDef]:
    """``limiter``: the same :class:`hub.accounts.api.RateLimiter` as the JSON API's."""

    async def _companies(hub: Any) -> list[Company]:
        async with hub.sessionmaker() as session:
            return list((await session.execute(select(Company).order_by(Company.name))).scalars())

    async def request_form(request: web.Request) -> web.Response:
        hub = request.app[HUB_KEY]
        return page("request_form.html.j2", fields=FORM_FIELDS, companies=await _companies(hub),
                    values={}, error=None, hub_name=hub.config.hub.name)

    async def request_submit(request: web.Request) -> web.Response:
        hub = request.app[HUB_KEY]
        if limiter is not None and limiter.check(client_address(request)) is not None:
            return page("message.html.j2", status=429, title="Too many requests",
                        message="Too many account requests from this address; please try again later.")
        form = await _small_form(request)
        if form is None:
            return page("message.html.j2", status=413, title="Too large", message="This form is too large.")
        data = form_to_data(form)
        try:
            _validate(AccountRequestFields, data)
            async with hub.transaction() as session:
                req, _ = await onboarding.submit_request(session, hub, data)
                state, missing = req.state, [onboarding.label(m) for m in req.missing_fields]
        except DomainError as err:
            return page("request_form.html.j2", status=err.status, fields=FORM_FIELDS,
                        companies=await _companies(hub), values=dict(form), error=err.message,
                        hub_name=hub.config.hub.name)
        return page("request_done.html.j2", state=state, missing=missing, hub_name=hub.config.hub.name)

    async def complete_form(request: web.Request) -> web.Response:
        hub = request.app[HUB_KEY]
        raw_id = request.match_info["id"]
        async with hub.sessionmaker() as session:
            req = await session.get(AccountRequest, int(raw_id)) if _is_id(raw_id) else None
        token = request.query.get("token", "")
        if req is None or req.completion_token_hash != onboarding.hash_secret(token):
            return page("message.html.j2", status=404, title="Not found", message="This link is not valid.")
        missing = set(req.missing_fields or [])
        fields = [f for f in FORM_FIELDS if f[0] in missing or f[0].split(".")[0] in missing]
        extra = [m for m in missing if m not in {f[0] for f in FORM_FIELDS} and m.split(".")[0] not in
                 {f[0].split(".")[0] for f in FORM_FIELDS} and m != "company"]
        async with hub.sessionmaker() as session:
            company = await session.get(Company, req.company_id) if req.company_id else None
        return page("complete_form.html.j2", req=req, token=token, fields=fields, extra=extra,
                    labels=onboarding.label, hub_name=hub.config.hub.name, for_whom=req.practice_name,
                    question=(req.extra or {}).get("company_question") if "answer" in missing else None,
                    company_name=company.name if company else None)

    async def complete_submit(request: web.Request) -> web.Response:
        hub = request.app[HUB_KEY]
        form = await _small_form(request)
        if form is None:
            return page("message.html.j2", status=413, title="Too large", message="This form is too large.")
        data = form_to_data(form)
        if not _is_id(request.match_info["id"]):
            return page("message.html.j2", status=404, title="Not found", message="This link is not valid.")
        try:
            _validate(AccountRequestFields, data)
            async with hub.transaction() as session:
                req = await session.get(AccountRequest, int(request.match_info["id"]))
                if req is not None and data.get("address"):
                    data["address"] = {**(req.address or {}), **data["address"]}
                req = await onboarding.complete_request(session, hub, int(request.match_info["id"]),
                                                        str(form.get("token", "")), data)
                state, missing = req.state, [onboarding.label(m) for m in req.missing_fields]
        except DomainError as err:
            return page("message.html.j2", status=err.status, title="Not saved", message=err.message)
        return page("request_done.html.j2", state=state, missing=missing, hub_name=hub.config.hub.name)

    async def password_form(request: web.Request) -> web.Response:
        hub = request.app[HUB_KEY]
        token = request.query.get("token", "")
        email, for_whom = await _password_owner(hub, token)
        return page("password_form.html.j2", token=token, error=None, email=email, for_whom=for_whom,
                    hub_name=hub.config.hub.name)

    async def password_submit(request: web.Request) -> web.Response:
        hub = request.app[HUB_KEY]
        form = await request.post()
        try:
            async with hub.transaction() as session:
                await onboarding.set_password(session, hub, str(form.get("token", "")),
                                              str(form.get("password", "")))
        except DomainError as err:
            email, for_whom = await _password_owner(hub, str(form.get("token", "")))
            return page("password_form.html.j2", status=err.status, token=form.get("token", ""),
                        error=err.message, email=email, for_whom=for_whom, hub_name=hub.config.hub.name)
        return page("message.html.j2", title="Password set", message="Your password is set; you can sign in now.",
                    link=("/console/sign-in", "Sign in"), hub_name=hub.config.hub.name)

    async def respond_page(request: web.Request) -> web.Response:
        hub = request.app[HUB_KEY]
        q = request.query if request.method == "GET" else await request.post()
        try:
            if not _is_id(request.match_info["id"]):
                raise LinkError("bad_signature", "this link is not valid")
            switch_id = int(request.match_info["id"])
            action, sig = str(q.get("action", "")), str(q.get("sig", ""))
            expires = parse_expires(str(q.get("expires", "")))
            verify_response(hub.config.hub.secret_key.get_secret_value(), switch_id, action, expires, sig,
                            hub.clock.now())
        except (ValueError, LinkError) as err:
            code = getattr(err, "code", "bad_link")
            return page("message.html.j2", status=410 if code == "link_expired" else 403,
                        title="Link not valid", message=str(err) if code else "This link is not valid.")
        if request.method == "GET":
            async with hub.sessionmaker() as session:
                sr = await session.get(SwitchRequest, switch_id)
                if sr is None:  # signed by this hub for a request it no longer has
                    return page("message.html.j2", status=404, title="Link not valid",
                                message="This switch request no longer exists.")
                practice = await session.get(Practice, sr.practice_id)
                new = await session.get(Company, sr.new_company_id)
                assert practice is not None  # the request's practice (a foreign key)
            return page("respond.html.j2", sr=sr, practice=practice, new=new, action=action,
                        expires=expires, sig=sig, for_whom=practice.name, hub_name=hub.config.hub.name)
        try:
            async with hub.transaction() as session:
                decision = await switching.record_response(session, hub, switch_id, action,
                                                           note=str(q.get("note", ""))[:2000])
        except DomainError as err:
            return page("message.html.j2", status=err.status, title="Not recorded", message=err.message)
        return page("message.html.j2", title="Answer recorded",
                    message=f"Thank you: your answer ({action}) is recorded. Outcome: "
                            f"{decision.outcome.value.replace('_', ' ')}.")

    async def confirm_page(request: web.Request) -> web.Response:
        """A known practice confirms an account with a new company through its signed link."""
        hub = request.app[HUB_KEY]
        q = request.query if request.method == "GET" else await request.post()
        async with hub.sessionmaker() as session:
            raw_id = request.match_info["id"]
            req = await session.get(AccountRequest, int(raw_id)) if _is_id(raw_id) else None
            try:
                if req is None or req.practice_id is None:
                    raise LinkError("bad_signature", "this link is not valid")
                practice_id = req.practice_id  # the practice the signature vouches for
                expires = parse_expires(str(q.get("expires", "")))
                sig = str(q.get("sig", ""))
                verify_consent(hub.config.hub.secret_key.get_secret_value(), req.id, practice_id,
                               expires, sig, hub.clock.now())
            except LinkError as err:
                return page("message.html.j2", status=410 if err.code == "link_expired" else 403,
                            title="Link not valid", message=str(err))
            if request.method == "GET":
                practice = await session.get(Practice, practice_id)
                company = await session.get(Company, req.company_id)
                return page("confirm.html.j2", req=req, practice=practice, company=company,
                            expires=expires, sig=sig)
        try:
            async with hub.transaction() as session:
                req = await session.get(AccountRequest, req.id)
                if req is None:
                    raise NotFound.of("account request")
                await onboarding.confirm_by_practice(session, hub, req, practice_id=practice_id,
                                                     actor=f"practice:{practice_id}:link")
        except DomainError as err:
            return page("message.html.j2", status=err.status, title="Not confirmed", message=err.message)
        return page("message.html.j2", title="Account confirmed",
                    message="Thank you: the account is confirmed; a welcome email follows.")

    return [
        web.get("/account-requests/{id}/confirm", confirm_page),
        web.post("/account-requests/{id}/confirm", confirm_page),
        web.get("/account-request", request_form),
        web.post("/account-request", request_submit),
        web.get("/account-requests/{id}/complete", complete_form),
        web.post("/account-requests/{id}/complete", complete_submit),
        web.get("/set-password", password_form),
        web.post("/set-password", password_submit),
        web.get("/switch-requests/{id}/respond", respond_page),
        web.post("/switch-requests/{id}/respond", respond_page),
    ]
