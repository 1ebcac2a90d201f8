"""JSON API of the accounts domain (under /api; tenant-scoped unless marked public).

- ``POST /api/account-requests`` (public, rate-limited), ``POST /api/account-requests/{id}/complete``
  (public, with the completion token), ``GET /api/account-requests[/{id}]``,
  ``POST /api/account-requests/{id}/accept|reject``
- ``POST /api/password`` (public: set a password with a single-use link), ``POST /api/login`` (public)
- ``GET /api/accounts`` (filters on every column, ``format=csv``), ``GET``/``PATCH /api/accounts/{id}``,
  ``GET /api/accounts/{id}/history``
- ``GET /api/reports/onboarding?from=&to=&company=&format=json|csv|pdf|html``
- ``POST /api/switch-requests``, ``GET /api/switch-requests[/{id}]``,
  ``POST /api/switch-requests/{id}/decision`` (operator)
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from functools import wraps
from typing import Any

from aiohttp import web
from sqlalchemy import select

from hub.accounts import manage, onboarding, switching
from hub.accounts.config import onboarding_settings
from hub.accounts.errors import AccountsError
from hub.accounts.models import AccountRequest, SwitchRequest
from hub.accounts.report import CONTENT_TYPES, FORMATS, render
from hub.auth import AuthError, revoke_token
from hub.auth import login as auth_login
from hub.web.auth import client_address, get_principal, public, require_role
from hub.web.errors import ApiError, json_body
from hub.web.keys import HUB_KEY

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def service_errors(handler: Handler) -> Handler:
    """Render the domain's refusals as the API's JSON errors."""

    @wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except AccountsError as err:
            raise ApiError(err.status, err.code, err.message, err.field) from err

    return wrapper


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


def _int(value: str, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ApiError(400, "invalid", f"{name} must be an integer", name) from None


def _query_date(request: web.Request, name: str) -> date | None:
    value = request.query.get(name)
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ApiError(400, "invalid", f"{name} must be a date (YYYY-MM-DD)", name) from None


def make_limiter(hub: Any) -> RateLimiter:
    s = onboarding_settings(hub)
    return RateLimiter(s.rate_limit, s.rate_window_seconds)


def routes(hub: Any, limiter: RateLimiter | None = None) -> list[web.RouteDef]:
    limiter = limiter or make_limiter(hub)
    logins = RateLimiter(30, 300.0)  # password guessing: 30 tries per 5 minutes per address

    # --- onboarding -----------------------------------------------------------------------------

    @public
    @service_errors
    async def create_account_request(request: web.Request) -> web.Response:
        wait = limiter.check(client_address(request))
        if wait is not None:
            err = ApiError(429, "rate_limited", "too many account requests from this address; try later")
            resp = err.response()
            resp.headers["Retry-After"] = str(int(wait) + 1)
            return resp
        hub = request.app[HUB_KEY]
        data = await json_body(request)
        async with hub.transaction() as session:
            req, token = await onboarding.submit_request(session, hub, data)
            body = onboarding.request_json(req)
        body["completion_token"] = token
        return web.json_response(body, status=201)

    @public
    @service_errors
    async def complete_account_request(request: web.Request) -> web.Response:
        hub = request.app[HUB_KEY]
        data = await json_body(request)
        token = str(data.pop("token", "") or request.query.get("token", ""))
        async with hub.transaction() as session:
            req = await onboarding.complete_request(session, hub, _int(request.match_info["id"], "id"), token, data)
            body = onboarding.request_json(req)
        return web.json_response(body)

    async def _scoped_request(session: Any, request: web.Request) -> AccountRequest:
        principal = require_role(request, "operator", "company_admin")
        req = await session.get(AccountRequest, _int(request.match_info["id"], "id"))
        if req is None or (principal.role == "company_admin" and req.company_id != principal.company_id):
            raise ApiError(404, "not_found", "account request not found")
        return req

    @service_errors
    async def list_account_requests(request: web.Request) -> web.Response:
        principal = require_role(request, "operator", "company_admin")
        hub = request.app[HUB_KEY]
        stmt = select(AccountRequest).order_by(AccountRequest.id)
        if principal.role == "company_admin":
            stmt = stmt.where(AccountRequest.company_id == principal.company_id)
        if state := request.query.get("state"):
            stmt = stmt.where(AccountRequest.state == state)
        async with hub.sessionmaker() as session:
            items = [onboarding.request_json(r) for r in (await session.execute(stmt)).scalars()]
        return web.json_response({"items": items})

    @service_errors
    async def get_account_request(request: web.Request) -> web.Response:
        hub = request.app[HUB_KEY]
        async with hub.sessionmaker() as session:
            req = await _scoped_request(session, request)
            return web.json_response(onboarding.request_json(req))

    @service_errors
    async def accept_account_request(request: web.Request) -> web.Response:
        hub = request.app[HUB_KEY]
        principal = get_principal(request)
        async with hub.transaction() as session:
            req = await _scoped_request(session, request)
            await onboarding.accept_request(session, hub, req, actor=principal.actor)
            body = onboarding.request_json(req)
        return web.json_response(body)

    @service_errors
    async def confirm_account_request(request: web.Request) -> web.Response:
        """The known practice's own logged-in staff confirm an account with a new company."""
        principal = require_role(request, "practice_staff")
        hub = request.app[HUB_KEY]
        async with hub.transaction() as session:
            req = await session.get(AccountRequest, _int(request.match_info["id"], "id"))
            if req is None or req.practice_id != principal.practice_id:
                raise ApiError(404, "not_found", "account request not found")
            await onboarding.confirm_by_practice(session, hub, req, practice_id=principal.practice_id,
                                                 actor=principal.actor)
            body = onboarding.request_json(req)
        return web.json_response(body)

    @service_errors
    async def reject_account_request(request: web.Request) -> web.Response:
        hub = request.app[HUB_KEY]
        principal = get_principal(request)
        data = await json_body(request) if request.can_read_body else {}
        async with hub.transaction() as session:
            req = await _scoped_request(session, request)
            await onboarding.reject_request(session, hub, req, actor=principal.actor,
                                            reason=str(data.get("reason") or ""))
            body = onboarding.request_json(req)
        return web.json_response(body)

    @public
    @service_errors
    async def set_password(request: web.Request) -> web.Response:
        hub = request.app[HUB_KEY]
        data = await json_body(request)
        async with hub.transaction() as session:
            user = await onboarding.set_password(session, hub, str(data.get("token") or ""),
                                                 str(data.get("password") or ""))
        return web.json_response({"user_id": user.id, "email": user.email})

    @public
    async def login(request: web.Request) -> web.Response:
        """Email and password -> a bearer token (expiring); refused for a suspended practice."""
        wait = logins.check(client_address(request))
        if wait is not None:
            raise ApiError(429, "rate_limited", "too many attempts; try later")
        hub = request.app[HUB_KEY]
        data = await json_body(request)
        lifetime = timedelta(hours=onboarding_settings(hub).login_token_hours)
        async with hub.transaction() as session:
            try:
                token, user = await auth_login(session, str(data.get("email") or ""),
                                               str(data.get("password") or ""), now=hub.clock.now(),
                                               lifetime=lifetime)
            except AuthError as err:
                raise ApiError(err.status, err.code, err.message) from err
        return web.json_response({"token": token, "role": user.role,
                                  "expires_at": (hub.clock.now() + lifetime).isoformat()})

    async def logout(request: web.Request) -> web.Response:
        """Revoke the token this request carries."""
        principal = get_principal(request)
        hub = request.app[HUB_KEY]
        async with hub.transaction() as session:
            await revoke_token(session, principal.token_id, hub.clock.now())
        return web.Response(status=204)

    # --- accounts --------------------------------------------------------------------------------

    @service_errors
    async def list_accounts(request: web.Request) -> web.Response:
        principal = get_principal(request)
        hub = request.app[HUB_KEY]
        fmt = request.query.get("format", "json")
        if fmt not in ("json", "csv"):
            raise ApiError(400, "invalid", "format is json or csv", "format")
        async with hub.sessionmaker() as session:
            items = await manage.list_accounts(session, principal, request.query)
        if fmt == "json":
            return web.json_response({"items": items})
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=manage.COLUMNS, lineterminator="\r\n")
        w.writeheader()
        for item in items:
            w.writerow({**item, "modalities": " ".join(item["modalities"])})
        return web.Response(body=buf.getvalue().encode(), content_type="text/csv", charset="utf-8",
                            headers={"Content-Disposition": 'attachment; filename="accounts.csv"'})

    @service_errors
    async def get_account(request: web.Request) -> web.Response:
        principal = get_principal(request)
        hub = request.app[HUB_KEY]
        async with hub.sessionmaker() as session:
            a, p, c = await manage.get_account(session, principal, _int(request.match_info["id"], "id"))
            return web.json_response(manage.account_json(a, p, c))

    @service_errors
    async def patch_account(request: web.Request) -> web.Response:
        principal = get_principal(request)
        hub = request.app[HUB_KEY]
        data = await json_body(request)
        async with hub.transaction() as session:
            body = await manage.update_account(session, hub, principal, _int(request.match_info["id"], "id"), data)
        return web.json_response(body)

    @service_errors
    async def get_account_history(request: web.Request) -> web.Response:
        principal = get_principal(request)
        hub = request.app[HUB_KEY]
        async with hub.sessionmaker() as session:
            a, _, _ = await manage.get_account(session, principal, _int(request.match_info["id"], "id"))
            return web.json_response({"items": await manage.account_history(session, a.id)})

    # --- report ------------------------------------------------------------------------------------

    @service_errors
    async def onboarding_report(request: web.Request) -> web.Response:
        principal = get_principal(request)
        hub = request.app[HUB_KEY]
        fmt = request.query.get("format", "json")
        if fmt not in FORMATS:
            raise ApiError(400, "invalid", f"format is one of {', '.join(FORMATS)}", "format")
        date_from, date_to = _query_date(request, "from"), _query_date(request, "to")
        async with hub.transaction() as session:
            company = await manage.report_company_for(session, principal, request.query.get("company"))
            report = await manage.onboarding_report(session, hub, company, date_from, date_to)
        if fmt == "pdf":  # CPU-bound rendering off the event loop
            body = await asyncio.get_running_loop().run_in_executor(None, render, report, fmt)
        else:
            body = render(report, fmt)
        headers = {}
        if fmt in ("csv", "pdf"):
            headers["Content-Disposition"] = f'attachment; filename="onboarding.{fmt}"'
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPES[fmt], **headers})

    # --- switch requests ------------------------------------------------------------------------------

    async def _scoped_switch(session: Any, request: web.Request) -> SwitchRequest:
        principal = get_principal(request)
        sr = await session.get(SwitchRequest, _int(request.match_info["id"], "id"))
        visible = sr is not None and (
            principal.role == "operator"
            or (principal.role == "practice_staff" and sr.practice_id == principal.practice_id)
            or (principal.role == "company_admin"
                and principal.company_id in (sr.current_company_id, sr.new_company_id))
        )
        if not visible:
            raise ApiError(404, "not_found", "switch request not found")
        return sr

    @service_errors
    async def create_switch_request(request: web.Request) -> web.Response:
        principal = require_role(request, "practice_staff", "operator")
        hub = request.app[HUB_KEY]
        data = await json_body(request)
        async with hub.transaction() as session:
            sr, _ = await switching.create_request(session, hub, data, principal)
            body = switching.switch_json(sr, await switching.load_steps(session, sr.id))
        return web.json_response(body, status=201)

    @service_errors
    async def list_switch_requests(request: web.Request) -> web.Response:
        principal = get_principal(request)
        hub = request.app[HUB_KEY]
        stmt = select(SwitchRequest).order_by(SwitchRequest.id)
        if principal.role == "practice_staff":
            stmt = stmt.where(SwitchRequest.practice_id == principal.practice_id)
        elif principal.role == "company_admin":
            stmt = stmt.where((SwitchRequest.current_company_id == principal.company_id)
                              | (SwitchRequest.new_company_id == principal.company_id))
        if state := request.query.get("state"):
            stmt = stmt.where(SwitchRequest.state == state)
        async with hub.sessionmaker() as session:
            items = [switching.switch_json(sr) for sr in (await session.execute(stmt)).scalars()]
        return web.json_response({"items": items})

    @service_errors
    async def get_switch_request(request: web.Request) -> web.Response:
        hub = request.app[HUB_KEY]
        async with hub.sessionmaker() as session:
            sr = await _scoped_switch(session, request)
            return web.json_response(switching.switch_json(sr, await switching.load_steps(session, sr.id)))

    @service_errors
    async def decide_switch_request(request: web.Request) -> web.Response:
        principal = require_role(request, "operator")
        hub = request.app[HUB_KEY]
        data = await json_body(request)
        async with hub.transaction() as session:
            sr = await _scoped_switch(session, request)
            await switching.operator_decide(session, hub, sr.id, str(data.get("decision") or ""),
                                            actor=principal.actor, note=str(data.get("note") or ""))
            await session.refresh(sr)
            body = switching.switch_json(sr, await switching.load_steps(session, sr.id))
        return web.json_response(body)

    return [
        web.post("/api/account-requests", create_account_request),
        web.get("/api/account-requests", list_account_requests),
        web.get("/api/account-requests/{id}", get_account_request),
        web.post("/api/account-requests/{id}/complete", complete_account_request),
        web.post("/api/account-requests/{id}/accept", accept_account_request),
        web.post("/api/account-requests/{id}/reject", reject_account_request),
        web.post("/api/account-requests/{id}/confirm", confirm_account_request),
        web.post("/api/password", set_password),
        web.post("/api/login", login),
        web.post("/api/logout", logout),
        web.get("/api/accounts", list_accounts),
        web.get("/api/accounts/{id}", get_account),
        web.patch("/api/accounts/{id}", patch_account),
        web.get("/api/accounts/{id}/history", get_account_history),
        web.get("/api/reports/onboarding", onboarding_report),
        web.post("/api/switch-requests", create_switch_request),
        web.get("/api/switch-requests", list_switch_requests),
        web.get("/api/switch-requests/{id}", get_switch_request),
        web.post("/api/switch-requests/{id}/decision", decide_switch_request),
    ]
