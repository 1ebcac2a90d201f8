"""Practice pages (operators see them too): clients (search, details, preferences, alerts,
loyalty, timeline) and the retention calendar. The client services of :mod:`hub.clients` decide
who sees which client (:mod:`hub.clients.scope`); a company admin sees none."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from aiohttp import web

from hub.clients import alerts as alert_service
from hub.clients import calendar, details, loyalty, preferences, scope, search, timeline
from hub.console import listing
from hub.console.app import form_value, requires
from hub.console.listing import Column
from hub.console.pages_company import path_id
from hub.console.render import PRINCIPAL, render
from hub.db.models import Practice
from hub.errors import DomainError, Invalid
from hub.web.keys import HUB_KEY

routes = web.RouteTableDef()
STAFF = ("operator", "practice_staff")
SEARCH_LIMIT = 200
CATEGORY_LABELS = {"reminder": "Health reminders", "appointment": "Appointments", "survey": "Surveys",
                   "loyalty": "Loyalty programme", "marketing": "News and offers"}

CLIENT_COLUMNS = (
    Column("first_name", "First name", link=lambda r: f"/console/clients/{r['id']}"),
    Column("last_name", "Last name", link=lambda r: f"/console/clients/{r['id']}"),
    Column("email", "Email"),
    Column("phone", "Phone"),
    Column("status", "Status"),
    Column("contactable", "Contactable", kind="bool"),
)


@routes.get("/clients")
@requires(*STAFF)
async def clients(request: web.Request) -> web.StreamResponse:
    """Search by name, email, phone (any format) or PIMS id; the table filters, sorts and exports."""
    hub, me = request.app[HUB_KEY], request[PRINCIPAL]
    q = request.query.get("q", "").strip()[:200]
    async with hub.sessionmaker() as session:
        ids = await scope.practice_ids(session, me)
        practice = await session.get(Practice, ids[0]) if ids else None
        page = await search.find_clients(session, ids, q or None, region=(practice.country if practice else "US"),
                                         limit=SEARCH_LIMIT)
        owners = await search.active_patient_owners(session, page.items)
    rows = [{"id": c.id, "first_name": c.first_name or "", "last_name": c.last_name or "", "email": c.email or "",
             "phone": c.phone_mobile or c.phone_home or c.phone_work or "", "status": c.status,
             "contactable": search.is_contactable(c, owners)} for c in page.items]
    shown = listing.build(rows, CLIENT_COLUMNS, request.query, request.path, keep=("q",))
    if request.query.get("format") == "csv":
        return listing.csv_response(shown, "clients.csv")
    return render(request, "clients.html.j2", title="Clients", listing=shown, q=q,
                  more=page.next_cursor is not None)


async def _client_page(request: web.Request, client_id: int, *, status: int = 200,
                       error: str | None = None) -> web.Response:
    hub, me = request.app[HUB_KEY], request[PRINCIPAL]
    async with hub.sessionmaker() as session:
        client = await scope.scoped_client(session, me, client_id)
        data = await details.client_details(session, client)
        prefs = await preferences.preferences(session, client.id)
        all_disabled, disabled = await alert_service.settings_of(session, client.id)
        current_alerts = await alert_service.alerts(session, client, hub.clock.now())
        loyalty_data: dict[str, Any] | None = None
        loyalty_on = True
        try:
            await loyalty.require_enabled(session, hub, client)
            try:
                account = await loyalty.account_of(session, client)
                loyalty_data = {"enrolled_at": account.enrolled_at,
                                "balance": await loyalty.ledger_balance(session, client.id),
                                "entries": await loyalty.entries(session, client.id, limit=20)}
            except DomainError:
                loyalty_data = None  # not enrolled yet
        except DomainError:
            loyalty_on = False
        events = (await timeline.timeline(session, client.id, limit=50)).items
    grid = {(p.category, p.channel): p for p in prefs}
    return render(request, "client.html.j2", status=status, title=data["contact"]["name"] or "Client",
                  c=data, grid=grid, categories=preferences.CATEGORIES, channels=preferences.CHANNELS,
                  category_labels=CATEGORY_LABELS, alerts=current_alerts, alerts_off=all_disabled,
                  alerts_disabled=disabled, loyalty_on=loyalty_on, loyalty=loyalty_data, events=events,
                  error=error)


@routes.get("/clients/{id}")
@requires(*STAFF)
async def client(request: web.Request) -> web.StreamResponse:
    return await _client_page(request, path_id(request))


@routes.post("/clients/{id}/preferences")
@requires(*STAFF)
async def save_preferences(request: web.Request) -> web.StreamResponse:
    """Each category × channel: Yes, No, or left as it is; written to the consent ledger."""
    hub, me = request.app[HUB_KEY], request[PRINCIPAL]
    client_id = path_id(request)
    form = await request.post()
    changes = []
    for category in preferences.CATEGORIES:
        for channel in preferences.CHANNELS:
            value = form_value(form, f"pref.{category}.{channel}", 5)
            if value in ("yes", "no"):
                changes.append((category, channel, value == "yes"))
    async with hub.transaction() as session:
        c = await scope.scoped_client(session, me, client_id)
        await preferences.set_preferences(session, hub, c, changes, actor=me.actor,
                                          note=form_value(form, "note", 500))
    raise web.HTTPSeeOther(f"/console/clients/{client_id}?notice=saved#preferences")


@routes.post("/clients/{id}/loyalty/{action:enroll|adjust|redeem}")
@requires(*STAFF)
async def loyalty_action(request: web.Request) -> web.StreamResponse:
    hub, me = request.app[HUB_KEY], request[PRINCIPAL]
    client_id, action = path_id(request), request.match_info["action"]
    form = await request.post()
    try:
        async with hub.transaction() as session:
            c = await scope.scoped_client(session, me, client_id)
            await loyalty.require_enabled(session, hub, c)
            if action == "enroll":
                await loyalty.enroll(session, hub, c, actor=me.actor)
            elif action == "adjust":
                try:
                    coins = int(form_value(form, "coins", 12))
                except ValueError:
                    raise Invalid("coins must be a whole number", field="coins") from None
                await loyalty.adjust(session, hub, c, coins, reason=form_value(form, "reason", 500), actor=me.actor)
            else:
                await loyalty.redeem(session, hub, c, form_value(form, "reward", 200), actor=me.actor)
    except DomainError as err:
        if err.status == 404:
            raise
        return await _client_page(request, client_id, status=err.status, error=err.message)
    raise web.HTTPSeeOther(f"/console/clients/{client_id}?notice=saved#loyalty")


def _day(value: str, default: date, name: str) -> date:
    if not value:
        return default
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise Invalid(f"{name} must be a date (YYYY-MM-DD)", field=name) from None


@routes.get("/reminders")
@requires(*STAFF)
async def retention_calendar(request: web.Request) -> web.StreamResponse:
    """Reminder steps by day (written with their status, or planned); each client a link."""
    hub, me = request.app[HUB_KEY], request[PRINCIPAL]
    today = hub.clock.now().date()
    first = _day(request.query.get("from", ""), today, "from")
    last = _day(request.query.get("to", ""), first + timedelta(days=13), "to")
    async with hub.sessionmaker() as session:
        ids = await scope.practice_ids(session, me)
        wanted = request.query.get("practice", "")
        practice_id = int(wanted) if wanted.isdigit() and int(wanted) in ids else (ids[0] if ids else None)
        practices = [p for p in [await session.get(Practice, i) for i in ids] if p is not None]
        practice = await scope.scoped_practice(session, me, practice_id) if practice_id else None
        days = await calendar.calendar(session, hub, practice, first, last) if practice else []
    return render(request, "reminders.html.j2", title="Retention calendar", days=days, first=first, last=last,
                  practice=practice, practices=practices if me.is_operator else [])
