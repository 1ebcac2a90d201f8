"""JSON API of the accounts domain (under /api; tenant-scoped unless marked public), declared
with :mod:`hub.web.contract`: unknown fields, over-long text and bad ids answer 422 naming the
field, bodies over their route's limit 413.

- ``POST /api/account-requests`` (public, rate-limited), ``POST /api/account-requests/{id}/complete``
  (public, with the completion token), ``GET /api/account-requests[/{id}]``,
  ``POST /api/account-requests/{id}/accept|reject|confirm``
- ``POST /api/password`` (public: set a password with a single-use link), ``POST /api/login``
  (public), ``POST /api/logout``
- ``GET /api/accounts`` (filters on every column, ``format=csv``), ``GET``/``PATCH /api/accounts/{id}``,
  ``GET /api/accounts/{id}/history``
- ``GET /api/reports/onboarding?from=&to=&company=&format=json|csv|pdf|html``
- ``POST /api/switch-requests``, ``GET /api/switch-requests[/{id}]``,
  ``POST /api/switch-requests/{id}/decision`` (operator),
  ``POST /api/switch-requests/{id}/confirm|discard`` (operator, a draft read from email)
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import ValidationError
from sqlalchemy import select

from hub.accounts import drafts, manage, onboarding, scope, switching
from hub.accounts.config import onboarding_settings
from hub.accounts.models import AccountRequest, SwitchRequest
from hub.accounts.report import CONTENT_TYPES, render
from hub.accounts.schemas import (
    PUBLIC_MAX_BODY,
    SMALL_BODY,
    AccountPatch,
    AccountRequestComplete,
    AccountRequestFields,
    LoginBody,
    NoBody,
    PasswordBody,
    RejectBody,
    ReportQuery,
    RequestListQuery,
    SwitchConfirm,
    SwitchCreate,
    SwitchDecision,
    SwitchDiscard,
    SwitchListQuery,
    TokenQuery,
)
from hub.auth import login as auth_login
from hub.auth import revoke_token
from hub.errors import NotFound, RateLimited
from hub.state import HubKey
from hub.web.auth import client_address, get_principal, read_as_caller, require_role
from hub.web.contract import ApiRoutes, Id, Prebuilt, RequestModel, invalid_from
from hub.web.keys import HUB_KEY

if TYPE_CHECKING:
    from hub.core import Hub

routes = ApiRoutes(tag="accounts")


class IdPath(RequestModel):
    """Path parameters of the account routes addressed by a numeric id."""
    id: Id


class RateLimiter:
    """A sliding window per client address, in this process (a replica limits on its own)."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self.hits: dict[str, deque[float]] = {}

    def check(self, key: str) -> float | None:
        """None when allowed (and counted), else seconds until the next slot frees."""
        now = time.monotonic()
        q = self.hits.setdefault(key, deque())
        while q and q[0] <= now - self.window:
            q.popleft()
        if len(q) >= self.limit:
            return max(q[0] + self.window - now, 0.1)
        q.append(now)
        if len(self.hits) > 10_000:  # forget idle addresses
            for k in [k for k, v in self.hits.items() if not v]:
                del self.hits[k]
        return None


@dataclass
class Limiters:
    """The rate limiters one application shares across its account routes."""
    requests: RateLimiter  # account requests: one budget for the JSON API and the HTML form
    logins: RateLimiter  # password guessing


LIMITERS: HubKey[Limiters] = HubKey("accounts.limiters")


def _new_limiters(hub: Hub) -> Limiters:
    s = onboarding_settings(hub)
    return Limiters(RateLimiter(s.rate_limit, s.rate_window_seconds), RateLimiter(30, 300.0))


def limiters(hub: Hub) -> Limiters:
    """This hub's rate limiters (made on first use, kept as long as the hub)."""
    return hub.state.setdefault(LIMITERS, lambda: _new_limiters(hub))


def _limit(limiter: RateLimiter, request: web.Request, message: str) -> None:
    wait = limiter.check(client_address(request))
    if wait is not None:
        raise RateLimited(message, retry_after=int(wait) + 1)


# --- onboarding -----------------------------------------------------------------------------------


@routes.post("/api/account-requests", summary="Ask for an account (public)", body=AccountRequestFields,
             status=201, public=True, errors=(413, 422, 429), max_body=PUBLIC_MAX_BODY)
async def create_account_request(request: web.Request, body: AccountRequestFields) -> dict[str, Any]:
    hub = request.app[HUB_KEY]
    _limit(limiters(hub).requests, request, "too many account requests from this address; try later")
    async with hub.transaction() as session:
        req, token = await onboarding.submit_request(session, hub, body.model_dump(exclude_unset=True))
        out = onboarding.request_json(req)
    return {**out, "completion_token": token}


@routes.post("/api/account-requests/{id}/complete", summary="Add what a request was missing (public)",
             path_params=IdPath, query=TokenQuery, body=AccountRequestComplete, public=True,
             errors=(404, 409, 413, 422), max_body=PUBLIC_MAX_BODY)
async def complete_account_request(request: web.Request, path: IdPath, query: TokenQuery,
                                   body: AccountRequestComplete) -> dict[str, Any]:
    hub = request.app[HUB_KEY]
    data = body.model_dump(exclude_unset=True)
    token = str(data.pop("token", None) or query.token or "")
    async with hub.transaction() as session:
        req = await onboarding.complete_request(session, hub, path.id, token, data)
        return onboarding.request_json(req)


@routes.get("/api/account-requests", summary="Account requests (the company's, or all; for practice "
            "staff those waiting for their practice)", query=RequestListQuery)
async def list_account_requests(request: web.Request, query: RequestListQuery) -> dict[str, Any]:
    principal = get_principal(request)
    hub = request.app[HUB_KEY]
    stmt = scope.requests_visible(principal, select(AccountRequest).order_by(AccountRequest.id))
    if query.state:
        stmt = stmt.where(AccountRequest.state == query.state)
    async with hub.sessionmaker() as session:
        return {"items": [onboarding.request_json(r) for r in (await session.execute(stmt)).scalars()]}


@routes.get("/api/account-requests/{id}", summary="One account request", path_params=IdPath,
            errors=(403, 404))
async def get_account_request(request: web.Request, path: IdPath) -> dict[str, Any]:
    principal = get_principal(request)
    async with request.app[HUB_KEY].sessionmaker() as session:
        return onboarding.request_json(await scope.scoped_request(session, principal, path.id))


@routes.post("/api/account-requests/{id}/accept", summary="Accept a complete request", path_params=IdPath,
             body=NoBody, errors=(403, 404, 409), max_body=SMALL_BODY)
async def accept_account_request(request: web.Request, path: IdPath, body: NoBody) -> dict[str, Any]:
    principal = require_role(request, "operator", "company_admin")
    hub = request.app[HUB_KEY]
    async with hub.transaction() as session:
        req = await scope.scoped_request(session, principal, path.id)
        await onboarding.accept_request(session, hub, req, actor=principal.actor)
        return onboarding.request_json(req)


@routes.post("/api/account-requests/{id}/reject", summary="Reject a request", path_params=IdPath,
             body=RejectBody, errors=(403, 404, 409), max_body=SMALL_BODY)
async def reject_account_request(request: web.Request, path: IdPath, body: RejectBody) -> dict[str, Any]:
    principal = require_role(request, "operator", "company_admin")
    hub = request.app[HUB_KEY]
    async with hub.transaction() as session:
        req = await scope.scoped_request(session, principal, path.id)
        await onboarding.reject_request(session, hub, req, actor=principal.actor, reason=body.reason)
        return onboarding.request_json(req)


@routes.post("/api/account-requests/{id}/confirm", summary="The known practice confirms a new company",
             path_params=IdPath, body=NoBody, errors=(403, 404, 409), max_body=SMALL_BODY)
async def confirm_account_request(request: web.Request, path: IdPath, body: NoBody) -> dict[str, Any]:
    """The known practice's own logged-in staff confirm an account with a new company."""
    principal = require_role(request, "practice_staff")
    hub = request.app[HUB_KEY]
    async with hub.transaction() as session:
        req = await session.get(AccountRequest, path.id)
        if req is None or req.practice_id is None or req.practice_id != principal.practice_id:
            raise NotFound.of("account request")
        await onboarding.confirm_by_practice(session, hub, req, practice_id=req.practice_id,
                                             actor=principal.actor)
        return onboarding.request_json(req)


@routes.post("/api/password", summary="Set a password with a single-use link (public)", body=PasswordBody,
             public=True, errors=(404, 410, 422), max_body=SMALL_BODY)
async def set_password(request: web.Request, body: PasswordBody) -> dict[str, Any]:
    hub = request.app[HUB_KEY]
    async with hub.transaction() as session:
        user = await onboarding.set_password(session, hub, body.token, body.password)
        return {"user_id": user.id, "email": user.email}


@routes.post("/api/login", summary="Email and password -> an expiring bearer token (public)", body=LoginBody,
             public=True, errors=(401, 403, 422, 429), max_body=SMALL_BODY)
async def login(request: web.Request, body: LoginBody) -> dict[str, Any]:
    """Refused for a suspended practice; rate-limited per client address."""
    hub = request.app[HUB_KEY]
    _limit(limiters(hub).logins, request, "too many attempts; try later")
    lifetime = timedelta(hours=onboarding_settings(hub).login_token_hours)
    now = hub.clock.now()
    async with hub.transaction() as session:
        token, user = await auth_login(session, body.email, body.password, now=now, lifetime=lifetime)
    return {"token": token, "role": user.role, "expires_at": (now + lifetime).isoformat()}


@routes.post("/api/logout", summary="Revoke the token this request carries", body=NoBody, status=204,
             max_body=SMALL_BODY)
async def logout(request: web.Request, body: NoBody) -> web.Response:
    principal = get_principal(request)
    hub = request.app[HUB_KEY]
    if principal.token_id is not None:  # a caller without a token has nothing to revoke
        async with hub.transaction() as session:
            await revoke_token(session, principal.token_id, hub.clock.now())
    return web.Response(status=204)


# --- accounts --------------------------------------------------------------------------------------


@routes.get("/api/accounts", summary="Accounts, filtered on any column (format=json|csv)", errors=(400, 422),
            auth_in_read=True)
async def list_accounts(request: web.Request) -> web.StreamResponse | Prebuilt:
    """Filters: any column name (``company=…``, ``status=…``, dates with ``_from``/``_to``); an
    unknown one is refused with 400 ``unknown_filter`` (declared by the service, not a model)."""
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "csv"):
        raise manage.ManageError(422, "invalid", "format is json or csv", "format")
    filtered = manage.filtered_accounts(request.query)
    # token, scope and rows in one hand-off to the read engine (never SQLite's write lock)
    items = await read_as_caller(request, lambda conn, principal: manage.account_rows(conn, principal, filtered))
    if fmt == "json":
        return Prebuilt({"items": items})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=manage.COLUMNS, lineterminator="\r\n")
    w.writeheader()
    for item in items:
        w.writerow({**item, "modalities": " ".join(item["modalities"])})
    return web.Response(body=buf.getvalue().encode(), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": 'attachment; filename="accounts.csv"'})


@routes.get("/api/accounts/{id}", summary="One account", path_params=IdPath, errors=(404,))
async def get_account(request: web.Request, path: IdPath) -> dict[str, Any]:
    principal = get_principal(request)
    async with request.app[HUB_KEY].sessionmaker() as session:
        a, p, c = await manage.get_account(session, principal, path.id)
        return manage.account_json(a, p, c)


@routes.patch("/api/accounts/{id}", summary="Change an account's access, modalities or auto-submit",
              path_params=IdPath, body=AccountPatch, errors=(403, 404, 409, 422), max_body=SMALL_BODY)
async def patch_account(request: web.Request, path: IdPath, body: AccountPatch) -> dict[str, Any]:
    principal = get_principal(request)
    hub = request.app[HUB_KEY]
    async with hub.transaction() as session:
        return await manage.update_account(session, hub, principal, path.id, body.model_dump(exclude_unset=True))


@routes.get("/api/accounts/{id}/history", summary="An account's history", path_params=IdPath, errors=(404,))
async def get_account_history(request: web.Request, path: IdPath) -> dict[str, Any]:
    principal = get_principal(request)
    async with request.app[HUB_KEY].sessionmaker() as session:
        a, _, _ = await manage.get_account(session, principal, path.id)
        return {"items": await manage.account_history(session, a.id)}


# --- report ------------------------------------------------------------------------------------------


@routes.get("/api/reports/onboarding", summary="The onboarding report (json, csv, pdf, html)",
            errors=(403, 404, 422))
async def onboarding_report(request: web.Request) -> web.StreamResponse:
    """Query: ``from``, ``to`` (YYYY-MM-DD), ``company``, ``format=json|csv|pdf|html`` (parsed with
    :class:`ReportQuery` here: one route answering four content types is not one spec entry)."""
    try:
        query = ReportQuery.model_validate(dict(request.query))
    except ValidationError as err:
        raise invalid_from(err, "query") from None
    principal = get_principal(request)
    hub = request.app[HUB_KEY]
    fmt = query.format
    async with hub.transaction() as session:
        company = await manage.report_company_for(session, principal, query.company)
        report = await manage.onboarding_report(session, hub, company, query.date_from, query.date_to)
    if fmt == "pdf":  # CPU-bound rendering off the event loop
        body = await asyncio.get_running_loop().run_in_executor(None, render, report, fmt)
    else:
        body = render(report, fmt)
    headers = {}
    if fmt in ("csv", "pdf"):
        headers["Content-Disposition"] = f'attachment; filename="onboarding.{fmt}"'
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPES[fmt], **headers})


# --- switch requests ------------------------------------------------------------------------------------


@routes.post("/api/switch-requests", summary="A practice's written request to switch companies",
             body=SwitchCreate, status=201, errors=(403, 409, 413, 422), max_body=32 * 1024)
async def create_switch_request(request: web.Request, body: SwitchCreate) -> dict[str, Any]:
    principal = require_role(request, "practice_staff", "operator")
    hub = request.app[HUB_KEY]
    async with hub.transaction() as session:
        sr, _ = await switching.create_request(session, hub, body.model_dump(exclude_none=True), principal)
        return switching.switch_json(sr, await switching.load_steps(session, sr.id))


@routes.get("/api/switch-requests", summary="Switch requests the caller is part of (operators: "
            "also drafts read from email, state=draft)", query=SwitchListQuery)
async def list_switch_requests(request: web.Request, query: SwitchListQuery) -> dict[str, Any]:
    principal = get_principal(request)
    hub = request.app[HUB_KEY]
    stmt = scope.switches_visible(principal, select(SwitchRequest).order_by(SwitchRequest.id))
    if query.state:
        stmt = stmt.where(SwitchRequest.state == query.state)
    async with hub.sessionmaker() as session:
        return {"items": [switching.switch_json(sr) for sr in (await session.execute(stmt)).scalars()]}


@routes.get("/api/switch-requests/{id}", summary="One switch request with its steps", path_params=IdPath,
            errors=(404,))
async def get_switch_request(request: web.Request, path: IdPath) -> dict[str, Any]:
    principal = get_principal(request)
    async with request.app[HUB_KEY].sessionmaker() as session:
        sr = await scope.scoped_switch(session, principal, path.id)
        return switching.switch_json(sr, await switching.load_steps(session, sr.id))


@routes.post("/api/switch-requests/{id}/decision", summary="An operator decides an objection",
             path_params=IdPath, body=SwitchDecision, errors=(403, 404, 409, 422), max_body=SMALL_BODY)
async def decide_switch_request(request: web.Request, path: IdPath, body: SwitchDecision) -> dict[str, Any]:
    principal = require_role(request, "operator")
    hub = request.app[HUB_KEY]
    async with hub.transaction() as session:
        sr = await scope.scoped_switch(session, principal, path.id)
        await switching.operator_decide(session, hub, sr.id, body.decision, actor=principal.actor, note=body.note)
        await session.refresh(sr)
        return switching.switch_json(sr, await switching.load_steps(session, sr.id))


@routes.post("/api/switch-requests/{id}/confirm", summary="An operator confirms a draft read from email: "
             "it becomes a request, as if entered by the operator", path_params=IdPath, body=SwitchConfirm,
             errors=(403, 404, 409, 422), max_body=SMALL_BODY)
async def confirm_switch_draft(request: web.Request, path: IdPath, body: SwitchConfirm) -> dict[str, Any]:
    principal = get_principal(request)
    hub = request.app[HUB_KEY]
    async with hub.transaction() as session:
        sr = await scope.scoped_switch(session, principal, path.id)  # a draft is 404 to all but operators
        require_role(request, "operator")
        await drafts.confirm_draft(session, hub, sr.id, body.model_dump(exclude_none=True), actor=principal.actor)
        return switching.switch_json(sr, await switching.load_steps(session, sr.id))


@routes.post("/api/switch-requests/{id}/discard", summary="An operator discards a draft read from email",
             path_params=IdPath, body=SwitchDiscard, errors=(403, 404, 409, 422), max_body=SMALL_BODY)
async def discard_switch_draft(request: web.Request, path: IdPath, body: SwitchDiscard) -> dict[str, Any]:
    principal = get_principal(request)
    hub = request.app[HUB_KEY]
    async with hub.transaction() as session:
        sr = await scope.scoped_switch(session, principal, path.id)
        require_role(request, "operator")
        await drafts.discard_draft(session, hub, sr.id, reason=body.reason, actor=principal.actor)
        return switching.switch_json(sr, await switching.load_steps(session, sr.id))
