"""Company admin pages (operators see them too, across companies): accounts, account requests,
the onboarding report and switch requests. Every read and change goes through the accounts
services with the signed-in principal, as the JSON API does."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

from aiohttp import web
from sqlalchemy import select

from hub.accounts import asking, drafts, manage, onboarding, scope, switching
from hub.accounts.models import REQUEST_STATES, AccountRequest, SwitchRequest, SwitchState
from hub.accounts.report import CONTENT_TYPES, STAGE_LABELS, STAGES
from hub.accounts.report import render as render_report
from hub.auth import Principal
from hub.console import listing
from hub.console.app import form_value, requires
from hub.console.listing import Column
from hub.console.render import PRINCIPAL, render
from hub.db.models import Company, Practice
from hub.db.types import ID_MAX
from hub.errors import Invalid, NotFound
from hub.web.keys import HUB_KEY

routes = web.RouteTableDef()
ADMINS = ("operator", "company_admin")


def path_id(request: web.Request, name: str = "id") -> int:
    raw = request.match_info[name]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 12 or int(raw) > ID_MAX:
        raise NotFound("there is no such page")
    return int(raw)


# --- accounts -------------------------------------------------------------------------------------

ACCOUNT_COLUMNS = (
    Column("practice", "Practice", link=lambda r: f"/console/accounts/{r['id']}"),
    Column("company_name", "Company"),
    Column("approved_for_access", "Approved for access", kind="bool"),
    Column("modalities", "Modalities"),
    Column("auto_submit", "Auto-submit", kind="bool"),
    Column("status", "Status"),
    Column("created_at", "Created", kind="date"),
    Column("id", "Account", kind="int"),
)


@routes.get("/accounts")
@requires(*ADMINS)
async def accounts(request: web.Request) -> web.StreamResponse:
    hub, me = request.app[HUB_KEY], request[PRINCIPAL]
    async with hub.sessionmaker() as session:
        rows = await manage.list_accounts(session, me, {})
    for r in rows:
        r["created_at"] = (r["created_at"] or "")[:10]
    shown = listing.build(rows, ACCOUNT_COLUMNS, request.query, request.path)
    if request.query.get("format") == "csv":
        return listing.csv_response(shown, "accounts.csv")
    return render(request, "accounts.html.j2", title="Accounts", listing=shown)


async def _account_page(request: web.Request, account_id: int, *, status: int = 200,
                        error: str | None = None) -> web.Response:
    hub, me = request.app[HUB_KEY], request[PRINCIPAL]
    async with hub.sessionmaker() as session:
        a, p, c = await manage.get_account(session, me, account_id)
        history = await manage.account_history(session, a.id)
        account = manage.account_json(a, p, c)
    return render(request, "account.html.j2", status=status, title=f"Account: {account['practice']}",
                  account=account, history=history, error=error)


@routes.get("/accounts/{id}")
@requires(*ADMINS)
async def account(request: web.Request) -> web.StreamResponse:
    return await _account_page(request, path_id(request))


@routes.post("/accounts/{id}")
@requires(*ADMINS)
async def account_save(request: web.Request) -> web.StreamResponse:
    """The settings form: Approved for Access, auto-submit, modalities (the API's PATCH)."""
    hub, me = request.app[HUB_KEY], request[PRINCIPAL]
    account_id = path_id(request)
    form = await request.post()
    changes: dict[str, Any] = {
        "approved_for_access": form.get("approved_for_access") == "on",
        "auto_submit": form.get("auto_submit") == "on",
        "modalities": [m for m in form_value(form, "modalities", 200).replace(",", " ").split() if m],
    }
    async with hub.sessionmaker() as session:
        a, _, _ = await manage.get_account(session, me, account_id)
        current = {"approved_for_access": a.approved_for_access, "auto_submit": a.auto_submit,
                   "modalities": sorted(a.modalities or [])}
    changes = {k: v for k, v in changes.items()
               if (sorted(m.upper() for m in v) if k == "modalities" else v) != current[k]}
    try:
        async with hub.transaction() as session:
            await manage.update_account(session, hub, me, account_id, changes)
    except manage.ManageError as err:
        if err.status == 404:
            raise
        return await _account_page(request, account_id, status=err.status, error=err.message)
    raise web.HTTPSeeOther(f"/console/accounts/{account_id}?notice=saved")


# --- account requests -------------------------------------------------------------------------------

REQUEST_COLUMNS = (
    Column("practice_name", "Practice", link=lambda r: f"/console/account-requests/{r['id']}"),
    Column("contact_name", "Contact"),
    Column("email", "Email"),
    Column("company", "Company"),
    Column("state_label", "Stage"),
    Column("requested", "Requested", kind="date"),
    Column("missing", "Missing"),
)


async def scoped_request(session: Any, me: Principal, request_id: int) -> AccountRequest:
    """The API's rule (:mod:`hub.accounts.scope`); these pages are for operators and company
    admins only."""
    if me.role not in ADMINS:
        raise NotFound.of("account request")
    return await scope.scoped_request(session, me, request_id)


@routes.get("/account-requests")
@requires(*ADMINS)
async def account_requests(request: web.Request) -> web.StreamResponse:
    hub, me = request.app[HUB_KEY], request[PRINCIPAL]
    stmt = scope.requests_visible(me, select(AccountRequest).order_by(AccountRequest.id))
    async with hub.sessionmaker() as session:
        names = dict((await session.execute(select(Company.id, Company.name))).all())
        rows = [{**onboarding.request_json(r), "company": names.get(r.company_id or 0, ""),
                 "state_label": r.state.replace("_", " "), "requested": r.requested_at.strftime("%Y-%m-%d"),
                 "missing": ", ".join(onboarding.label(m) for m in r.missing_fields or [])}
                for r in (await session.execute(stmt)).scalars()]
    counts = {s: sum(1 for r in rows if r["state"] == s) for s in REQUEST_STATES}
    shown = listing.build(rows, REQUEST_COLUMNS, request.query, request.path)
    if request.query.get("format") == "csv":
        return listing.csv_response(shown, "account-requests.csv")
    return render(request, "account_requests.html.j2", title="Account requests", listing=shown,
                  counts=counts)


async def _request_page(request: web.Request, request_id: int, *, status: int = 200,
                        error: str | None = None) -> web.Response:
    hub, me = request.app[HUB_KEY], request[PRINCIPAL]
    async with hub.sessionmaker() as session:
        req = await scoped_request(session, me, request_id)
        company = await session.get(Company, req.company_id) if req.company_id else None
        data = onboarding.request_json(req)
    stages = [(STAGE_LABELS.get(s, s), data["stages"].get(s)) for s in STAGES]
    return render(request, "account_request.html.j2", status=status, title=f"Account request {request_id}",
                  req=data, company=company, stages=stages, error=error,
                  missing=[onboarding.label(m) for m in data["missing_fields"]])


@routes.get("/account-requests/{id}")
@requires(*ADMINS)
async def account_request(request: web.Request) -> web.StreamResponse:
    return await _request_page(request, path_id(request))


@routes.post("/account-requests/{id}/{action:accept|reject}")
@requires(*ADMINS)
async def account_request_decide(request: web.Request) -> web.StreamResponse:
    hub, me = request.app[HUB_KEY], request[PRINCIPAL]
    request_id, action = path_id(request), request.match_info["action"]
    form = await request.post()
    try:
        async with hub.transaction() as session:
            req = await scoped_request(session, me, request_id)
            if action == "accept":
                await onboarding.accept_request(session, hub, req, actor=me.actor)
            else:
                await onboarding.reject_request(session, hub, req, actor=me.actor,
                                                reason=form_value(form, "reason"))
    except onboarding.OnboardingError as err:
        return await _request_page(request, request_id, status=err.status, error=err.message)
    raise web.HTTPSeeOther(f"/console/account-requests/{request_id}?notice={action}ed")


@routes.post("/account-requests/{id}/ask")
@requires(*ADMINS)
async def account_request_ask(request: web.Request) -> web.StreamResponse:
    """Ask the practice for more: a free-text question and/or named fields; it gets a new link."""
    hub, me = request.app[HUB_KEY], request[PRINCIPAL]
    request_id = path_id(request)
    form = await request.post()
    fields = form_value(form, "fields", 500).replace(",", " ").split()
    try:
        async with hub.transaction() as session:
            req = await scoped_request(session, me, request_id)
            await asking.ask_for_information(session, hub, req, actor=me.actor, fields=fields,
                                             question=form_value(form, "question"))
    except onboarding.OnboardingError as err:
        return await _request_page(request, request_id, status=err.status, error=err.message)
    raise web.HTTPSeeOther(f"/console/account-requests/{request_id}?notice=asked")


# --- the onboarding report ---------------------------------------------------------------------------


def _day(request: web.Request, name: str) -> date | None:
    value = request.query.get(name, "").strip()
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise Invalid(f"{'From' if name == 'from' else 'To'} must be a date (YYYY-MM-DD)", field=name) from None


@routes.get("/reports/onboarding")
@requires(*ADMINS)
async def onboarding_report(request: web.Request) -> web.StreamResponse:
    """A date range, "Show report", the table; CSV and PDF are the report service's renderings."""
    hub, me = request.app[HUB_KEY], request[PRINCIPAL]
    fmt = request.query.get("format", "")
    date_from, date_to = _day(request, "from"), _day(request, "to")
    shown = "show" in request.query or fmt in ("csv", "pdf")
    report = None
    if shown:
        async with hub.transaction() as session:
            company = await manage.report_company_for(session, me, request.query.get("company") or None)
            report = await manage.onboarding_report(session, hub, company, date_from, date_to)
        if fmt in ("csv", "pdf"):
            body = await asyncio.get_running_loop().run_in_executor(None, render_report, report, fmt)
            return web.Response(body=body, headers={
                "Content-Type": CONTENT_TYPES[fmt],
                "Content-Disposition": f'attachment; filename="onboarding.{fmt}"'})
    companies: list[Company] = []
    if me.is_operator:
        async with hub.sessionmaker() as session:
            companies = list((await session.execute(select(Company).order_by(Company.name))).scalars())
    query = {k: v for k, v in request.query.items() if k in ("from", "to", "company")}
    return render(request, "report_onboarding.html.j2", title="Onboarding report", report=report,
                  stages=[(s, STAGE_LABELS.get(s, s)) for s in STAGES], query=query, companies=companies)


# --- switch requests ---------------------------------------------------------------------------------

SWITCH_COLUMNS = (
    Column("practice", "Practice", link=lambda r: f"/console/switch-requests/{r['id']}"),
    Column("kind", "Kind"),
    Column("current", "Current company"),
    Column("new", "New company"),
    Column("state", "State"),
    Column("outcome", "Outcome"),
    Column("requested", "Requested", kind="date"),
)


def visible_switch(me: Principal, sr: SwitchRequest | None) -> bool:
    """The API's rule (:func:`hub.accounts.scope.sees_switch`)."""
    return sr is not None and scope.sees_switch(me, sr)


@routes.get("/switch-requests")
async def switch_requests(request: web.Request) -> web.StreamResponse:
    hub, me = request.app[HUB_KEY], request[PRINCIPAL]
    async with hub.sessionmaker() as session:
        companies: dict[int | None, str] = dict((await session.execute(select(Company.id, Company.name))).all())
        practices = dict((await session.execute(select(Practice.id, Practice.name))).all())
        rows = [{"id": sr.id, "practice": practices.get(sr.practice_id, ""), "kind": sr.kind,
                 "current": companies.get(sr.current_company_id, ""), "new": companies.get(sr.new_company_id, ""),
                 "state": sr.state.replace("_", " "), "outcome": (sr.outcome or "").replace("_", " "),
                 "requested": sr.requested_at.strftime("%Y-%m-%d")}
                for sr in (await session.execute(select(SwitchRequest).order_by(SwitchRequest.id))).scalars()
                if visible_switch(me, sr)]
        own: list[Company] = []
        if me.role == "practice_staff":
            own = list((await session.execute(select(Company).order_by(Company.name))).scalars())
    shown = listing.build(rows, SWITCH_COLUMNS, request.query, request.path)
    if request.query.get("format") == "csv":
        return listing.csv_response(shown, "switch-requests.csv")
    title = "Switch or add a company" if me.role == "practice_staff" else "Switch requests"
    return render(request, "switch_requests.html.j2", title=title, listing=shown, companies=own,
                  error=None, values={})


@routes.post("/switch-requests")
@requires("practice_staff")
async def switch_request_create(request: web.Request) -> web.StreamResponse:
    """The practice's written request: who asks, that they are authorised, from and to whom."""
    hub, me = request.app[HUB_KEY], request[PRINCIPAL]
    form = await request.post()
    data = {
        "kind": form_value(form, "kind", 8) or "move",
        "current_company": form_value(form, "current_company", 64),
        "new_company": form_value(form, "new_company", 64),
        "modalities": form_value(form, "modalities", 200).replace(",", " ").split(),
        "requester_name": form_value(form, "requester_name", 200),
        "requester_email": form_value(form, "requester_email", 320),
        "requester_authorised": form.get("requester_authorised") == "on",
        "statement": form_value(form, "statement", 5000),
    }
    try:
        async with hub.transaction() as session:
            sr, _ = await switching.create_request(session, hub, data, me)
            new_id = sr.id
    except switching.SwitchError as err:
        async with hub.sessionmaker() as session:
            own = list((await session.execute(select(Company).order_by(Company.name))).scalars())
        shown = listing.build([], SWITCH_COLUMNS, {}, request.path)
        return render(request, "switch_requests.html.j2", status=err.status, title="Switch or add a company",
                      listing=shown, companies=own, error=err.message, values={k: str(v) for k, v in form.items()})
    raise web.HTTPSeeOther(f"/console/switch-requests/{new_id}?notice=saved")


async def _switch_page(request: web.Request, switch_id: int, *, status: int = 200,
                       error: str | None = None) -> web.Response:
    hub, me = request.app[HUB_KEY], request[PRINCIPAL]
    async with hub.sessionmaker() as session:
        sr = await session.get(SwitchRequest, switch_id)
        if sr is None or not visible_switch(me, sr):
            raise NotFound.of("switch request")
        data = switching.switch_json(sr, await switching.load_steps(session, sr.id))
        practice = await session.get(Practice, sr.practice_id)
        # a draft may not know its companies yet
        current = await session.get(Company, sr.current_company_id) if sr.current_company_id else None
        new = await session.get(Company, sr.new_company_id) if sr.new_company_id else None
    can_respond = (me.role == "company_admin" and me.company_id == data["current_company_id"]
                   and data["state"] == "awaiting_response" and data["response"] == "none")
    can_decide = me.is_operator and data["state"] == "escalated"
    is_draft = me.is_operator and data["state"] == SwitchState.draft
    companies: list[Company] = []
    if is_draft:
        async with hub.sessionmaker() as session:
            companies = list((await session.execute(select(Company).order_by(Company.name))).scalars())
    return render(request, "switch_request.html.j2", status=status, title=f"Switch request {switch_id}",
                  sr=data, practice=practice, current=current, new=new, error=error,
                  can_respond=can_respond, can_decide=can_decide, is_draft=is_draft, companies=companies)


@routes.get("/switch-requests/{id}")
async def switch_request(request: web.Request) -> web.StreamResponse:
    return await _switch_page(request, path_id(request))


@routes.post("/switch-requests/{id}/respond")
@requires(*ADMINS)
async def switch_respond(request: web.Request) -> web.StreamResponse:
    """The current company approves or objects (what its signed email link does), or an operator
    decides an escalated request."""
    hub, me = request.app[HUB_KEY], request[PRINCIPAL]
    switch_id = path_id(request)
    form = await request.post()
    action, note = form_value(form, "action", 10), form_value(form, "note")
    try:
        async with hub.transaction() as session:
            sr = await session.get(SwitchRequest, switch_id)
            if sr is None or not visible_switch(me, sr):
                raise NotFound.of("switch request")
            if me.is_operator:
                await switching.operator_decide(session, hub, switch_id, action, actor=me.actor, note=note)
            elif me.company_id == sr.current_company_id:
                await switching.record_response(session, hub, switch_id, action, note=note)
            else:
                raise switching.SwitchError(403, "forbidden", "only the current company answers this request")
    except switching.SwitchError as err:
        if err.status == 404:
            raise
        return await _switch_page(request, switch_id, status=err.status, error=err.message)
    raise web.HTTPSeeOther(f"/console/switch-requests/{switch_id}?notice=recorded")


@routes.post("/switch-requests/{id}/draft")
@requires("operator")
async def switch_draft(request: web.Request) -> web.StreamResponse:
    """An operator confirms a draft read from email (naming the companies it could not read) or
    discards it with a reason: the same services as the JSON API's confirm and discard."""
    hub, me = request.app[HUB_KEY], request[PRINCIPAL]
    switch_id = path_id(request)
    form = await request.post()
    action = form_value(form, "action", 10)
    try:
        async with hub.transaction() as session:
            if action == "confirm":
                data = {"current_company": form_value(form, "current_company", 64),
                        "new_company": form_value(form, "new_company", 64),
                        "kind": form_value(form, "kind", 8) or None,
                        "modalities": form_value(form, "modalities", 200).replace(",", " ").split(),
                        "requester_name": form_value(form, "requester_name", 200),
                        "requester_authorised": form.get("requester_authorised") == "on",
                        "note": form_value(form, "note", 2000)}
                await drafts.confirm_draft(session, hub, switch_id, {k: v for k, v in data.items() if v != ""},
                                           actor=me.actor)
            elif action == "discard":
                await drafts.discard_draft(session, hub, switch_id, reason=form_value(form, "reason", 2000),
                                           actor=me.actor)
            else:
                raise switching.SwitchError(422, "invalid_field", "confirm or discard the draft", "action")
    except switching.SwitchError as err:
        if err.status == 404:
            raise
        return await _switch_page(request, switch_id, status=err.status, error=err.message)
    raise web.HTTPSeeOther(f"/console/switch-requests/{switch_id}?notice=recorded")
