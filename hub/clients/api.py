"""``/api/clients`` and ``/api/patients``: find, read, preferences, alerts. Handlers are thin:
scope (:mod:`hub.clients.scope`), then one service call."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from aiohttp import web
from pydantic import Field
from sqlalchemy.engine import Connection

from hub.auth import Principal
from hub.clients import alerts as alert_service
from hub.clients import (
    calendar,
    details,
    loyalty,
    preferences,
    scope,
    search,
    surveys,
    timeline,
)
from hub.clients.alerts import AlertCode
from hub.clients.preferences import CATEGORIES, CHANNELS
from hub.web.auth import get_principal, read_as_caller
from hub.web.contract import ApiRoutes, Id, Prebuilt, RequestModel, ResponseModel
from hub.web.keys import HUB_KEY

routes = ApiRoutes(tag="clients")

Category = Literal["reminder", "appointment", "survey", "loyalty", "marketing"]
Channel = Literal["email", "sms", "postcard"]


class ClientQuery(RequestModel):
    """Query of the client search: text, status and practice filters, page size and cursor."""
    q: str | None = Field(None, max_length=200)
    status: Literal["active", "inactive"] | None = None
    practice_id: Id | None = None
    has_email: bool | None = None
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(None, max_length=1000)


class PatientQuery(RequestModel):
    """Query of the patient search: text and practice filters, page size and cursor."""
    q: str | None = Field(None, max_length=200)
    practice_id: Id | None = None
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(None, max_length=1000)


class IdPath(RequestModel):
    """Path parameters of the client routes addressed by a numeric id."""
    id: Id


class ClientItem(ResponseModel):
    """One client in a search result page."""
    id: int
    practice_id: int
    pims_id: str
    name: str
    first_name: str | None
    last_name: str | None
    status: str
    email: str | None
    phone_mobile: str | None
    contactable: bool


class ClientPage(ResponseModel):
    """A page of client search results, with the cursor of the next page."""
    items: list[ClientItem]
    next_cursor: str | None


class PatientOut(ResponseModel):
    """A patient as the API returns it, in searches and on its client's record."""
    id: int
    practice_id: int
    pims_id: str
    client_pims_id: str | None
    name: str | None
    species: str | None
    breed: str | None
    sex: str | None
    birth_date: str | None
    status: str


class PatientPage(ResponseModel):
    """A page of patient search results, with the cursor of the next page."""
    items: list[PatientOut]
    next_cursor: str | None = None


class PracticeRef(ResponseModel):
    """The practice a client belongs to, named by id, slug and name."""
    id: int
    slug: str
    name: str


class SurveyRef(ResponseModel):
    """The client's latest survey answer, as shown in the summary."""
    rating: int | None
    comment: str | None
    answered_at: str | None


class Summary(ResponseModel):
    """The at-a-glance part of a client's record: status, practice, balance, reachability."""
    pims_id: str
    status: str
    primary_practice: PracticeRef
    balance_due: str | None
    client_class: str | None
    comms_disabled: bool
    pet_app: str
    contactable: bool
    last_survey: SurveyRef | None


class Phones(ResponseModel):
    """A client's phone numbers by kind; any may be missing."""
    home: str | None
    work: str | None
    mobile: str | None


class MailingAddress(ResponseModel):
    """One postal address of a client, labelled with its kind (today always "mailing")."""
    kind: str
    line1: str | None
    line2: str | None
    city: str | None
    region: str | None
    postcode: str | None
    country: str | None


class Contact(ResponseModel):
    """How to reach a client: name, email with its standing, phones and addresses."""
    first_name: str | None
    last_name: str | None
    name: str
    email: str | None
    email_status: Literal["valid", "invalid", "bounced", "unverified"]
    phones: Phones
    mailing_addresses: list[MailingAddress]


class SurveyAnswer(ResponseModel):
    """One survey answer on a client's record, with the visit it was about."""
    rating: int | None
    comment: str | None
    answered_at: str | None
    visit: str


class ClientOut(ResponseModel):
    """Response body of a client's details: summary, contact, patients and survey answers."""
    id: int
    summary: Summary
    contact: Contact
    patients: list[PatientOut]
    #: survey answers, newest first; absent for a client who never answered one
    surveys: list[SurveyAnswer] | None = None


class PreferenceOut(ResponseModel):
    """A client's yes, no or unset choice for one message category on one channel."""
    category: Category
    channel: Channel
    allowed: bool | None
    source: str | None


class PreferencesOut(ResponseModel):
    """Response body listing a client's communication preferences."""
    client_id: int
    items: list[PreferenceOut]


class PreferenceIn(RequestModel):
    """One preference a staff member sets: allow or refuse a category on a channel."""
    category: Category
    channel: Channel
    allowed: bool


class PreferencesIn(RequestModel):
    """Body that changes a client's communication preferences, with a note for the record."""
    items: list[PreferenceIn] = Field(min_length=1, max_length=len(CATEGORIES) * len(CHANNELS))
    note: str = Field("", max_length=500)


class AlertSettingsIO(RequestModel):
    """Which alerts staff have turned off for a client; both the request and response body."""
    all_disabled: bool = False
    disabled: list[AlertCode] = Field(default_factory=list, max_length=len(AlertCode))


class AlertOut(ResponseModel):
    """One alert on a client, as the API returns it."""
    code: AlertCode
    message: str
    patient_id: int | None


class AlertsOut(ResponseModel):
    """Response body of a client's alerts: the current ones and which are turned off."""
    client_id: int
    settings: AlertSettingsIO
    items: list[AlertOut]


def client_item(c: Any, owners: set[tuple[int, str]]) -> dict[str, Any]:
    """One :class:`ClientItem`, as the model would write it, from a client or a row of one."""
    return {"id": c.id, "practice_id": c.practice_id, "pims_id": c.external_id,
            "name": details.display_name(c), "first_name": c.first_name, "last_name": c.last_name,
            "status": c.status, "email": c.email, "phone_mobile": c.phone_mobile,
            "contactable": search.is_contactable(c, owners)}


def _client_page(conn: Connection, principal: Principal, query: ClientQuery) -> dict[str, Any]:
    ids = scope.search_scope_on(conn, principal, query.practice_id)
    page = search.find_client_rows(
        conn, ids, query.q, region=lambda: search.region_on(conn, ids), status=query.status,
        has_email=query.has_email, cursor=query.cursor, limit=query.limit)
    owners = search.owners_in(page.items)
    return {"items": [client_item(c, owners) for c in page.items], "next_cursor": page.next_cursor}


@routes.get("/api/clients", summary="Find clients", query=ClientQuery, response=ClientPage,
            errors=(404, 422), auth_in_read=True)
async def list_clients(request: web.Request, query: ClientQuery) -> Prebuilt:
    """By name prefix (case- and accent-insensitive), email, phone in any format, or PIMS id;
    active and inactive clients, each with whether it may be contacted."""
    # Token, scope, the page and its owners in one hand-off to the read engine (never SQLite's
    # write lock), as plain rows sent without a model per client (checked by test_prebuilt).
    return Prebuilt(await read_as_caller(request, lambda conn, principal: _client_page(conn, principal, query)))


@routes.get("/api/clients/{id}", summary="A client's details", path_params=IdPath,
            response=ClientOut, errors=(404,))
async def get_client(request: web.Request, path: IdPath) -> dict[str, Any]:
    hub, principal = request.app[HUB_KEY], get_principal(request)
    async with hub.sessionmaker() as session:
        client = await scope.scoped_client(session, principal, path.id)
        return await details.client_details(session, client)


@routes.get("/api/clients/{id}/patients", summary="A client's patients", path_params=IdPath,
            response=PatientPage, errors=(404,))
async def get_client_patients(request: web.Request, path: IdPath) -> dict[str, Any]:
    hub, principal = request.app[HUB_KEY], get_principal(request)
    async with hub.sessionmaker() as session:
        client = await scope.scoped_client(session, principal, path.id)
        patients = await search.client_patients(session, client)
    return {"items": [details.patient_json(p) for p in patients], "next_cursor": None}


@routes.get("/api/patients", summary="Find patients", query=PatientQuery, response=PatientPage,
            errors=(404, 422))
async def list_patients(request: web.Request, query: PatientQuery) -> dict[str, Any]:
    """By name prefix (case- and accent-insensitive) or PIMS id."""
    hub, principal = request.app[HUB_KEY], get_principal(request)
    async with hub.sessionmaker() as session:
        ids = await scope.practice_ids(session, principal, query.practice_id)
        page = await search.find_patients(session, ids, query.q, cursor=query.cursor,
                                          limit=query.limit)
    return {"items": [details.patient_json(p) for p in page.items],
            "next_cursor": page.next_cursor}


def _prefs(client_id: int, items: list[preferences.Preference]) -> dict[str, Any]:
    return {"client_id": client_id,
            "items": [{"category": p.category, "channel": p.channel, "allowed": p.allowed,
                       "source": p.source} for p in items]}


@routes.get("/api/clients/{id}/preferences", summary="A client's communication preferences",
            path_params=IdPath, response=PreferencesOut, errors=(404,))
async def get_preferences(request: web.Request, path: IdPath) -> dict[str, Any]:
    """Per category and channel: yes, no, or null (never said; the default applies)."""
    hub, principal = request.app[HUB_KEY], get_principal(request)
    async with hub.sessionmaker() as session:
        client = await scope.scoped_client(session, principal, path.id)
        return _prefs(client.id, await preferences.preferences(session, client.id))


@routes.put("/api/clients/{id}/preferences", summary="Change a client's preferences",
            path_params=IdPath, body=PreferencesIn, response=PreferencesOut, errors=(404, 422))
async def put_preferences(request: web.Request, path: IdPath,
                          body: PreferencesIn) -> dict[str, Any]:
    """Written to the consent ledger with ``staff`` as the source, and audited."""
    hub, principal = request.app[HUB_KEY], get_principal(request)
    async with hub.transaction() as session:
        client = await scope.scoped_client(session, principal, path.id)
        items = await preferences.set_preferences(
            session, hub, client, [(i.category, i.channel, i.allowed) for i in body.items],
            actor=principal.actor, note=body.note)
        return _prefs(client.id, items)


async def _alerts(session: Any, hub: Any, client: Any) -> dict[str, Any]:
    all_disabled, disabled = await alert_service.settings_of(session, client.id)
    items = await alert_service.alerts(session, client, hub.clock.now())
    return {"client_id": client.id,
            "settings": {"all_disabled": all_disabled, "disabled": disabled},
            "items": [a.as_dict() for a in items]}


@routes.get("/api/clients/{id}/alerts", summary="A client's retention alerts",
            path_params=IdPath, response=AlertsOut, errors=(404,))
async def get_alerts(request: web.Request, path: IdPath) -> dict[str, Any]:
    """Invalid or bounced email, missing mobile, no mailing address, overdue reminders, no
    visit in 18 months — less those the client's alert settings turn off."""
    hub, principal = request.app[HUB_KEY], get_principal(request)
    async with hub.sessionmaker() as session:
        client = await scope.scoped_client(session, principal, path.id)
        return await _alerts(session, hub, client)


@routes.put("/api/clients/{id}/alerts/settings", summary="Turn a client's alerts off or on",
            path_params=IdPath, body=AlertSettingsIO, response=AlertsOut, errors=(404, 422))
async def put_alert_settings(request: web.Request, path: IdPath,
                             body: AlertSettingsIO) -> dict[str, Any]:
    """All alerts, or some by code. Reminders are never affected."""
    hub, principal = request.app[HUB_KEY], get_principal(request)
    async with hub.transaction() as session:
        client = await scope.scoped_client(session, principal, path.id)
        await alert_service.set_settings(session, client, all_disabled=body.all_disabled,
                                         disabled=[c.value for c in body.disabled],
                                         actor=principal.actor, now=hub.clock.now())
        return await _alerts(session, hub, client)


class CalendarQuery(RequestModel):
    """Query of the retention calendar: the date range to show."""
    from_: date = Field(alias="from")
    to: date


class CalendarClient(ResponseModel):
    """The client a calendar step is for."""
    id: int
    name: str | None


class CalendarStep(ResponseModel):
    """One reminder step on the retention calendar: what it is, its state and channel."""
    reminder_id: int
    step: str
    status: Literal["planned", "queued", "deferred", "suppressed", "skipped"]
    service: str | None
    due_date: str | None
    channel: str | None
    communication_id: int | None
    reason_code: str | None
    client: CalendarClient | None


class CalendarDay(ResponseModel):
    """One day of the retention calendar with the steps that fall on it."""
    date: str
    steps: list[CalendarStep]


class CalendarOut(ResponseModel):
    """Response body of a practice's retention calendar, day by day."""
    practice_id: int
    days: list[CalendarDay]


@routes.get("/api/practices/{id}/reminders", summary="The retention calendar",
            path_params=IdPath, query=CalendarQuery, response=CalendarOut, errors=(404, 422))
async def reminder_calendar(request: web.Request, path: IdPath,
                            query: CalendarQuery) -> dict[str, Any]:
    """Reminder steps by day between ``from`` and ``to`` (at most 93 days): those written, with
    their status and reason, and those still planned, each with its client."""
    hub, principal = request.app[HUB_KEY], get_principal(request)
    async with hub.sessionmaker() as session:
        practice = await scope.scoped_practice(session, principal, path.id)
        days = await calendar.calendar(session, hub, practice, query.from_, query.to)
    return {"practice_id": practice.id, "days": days}


class TimelineQuery(RequestModel):
    """Query of a client's timeline: page size and cursor."""
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(None, max_length=1000)


class TimelineOut(ResponseModel):
    """Response body of a page of a client's timeline, newest first."""
    client_id: int
    #: each item has ``kind`` (communication, inbound, survey_response, loyalty, preference),
    #: ``id``, ``at`` and the kind's own fields; communications carry their status ``history``
    items: list[dict[str, Any]]
    next_cursor: str | None


@routes.get("/api/clients/{id}/timeline", summary="A client's timeline, newest first",
            path_params=IdPath, query=TimelineQuery, response=TimelineOut, errors=(404, 422))
async def get_timeline(request: web.Request, path: IdPath, query: TimelineQuery) -> dict[str, Any]:
    """Communications with their status history, inbound replies, survey answers, loyalty
    activity and preference changes."""
    hub, principal = request.app[HUB_KEY], get_principal(request)
    async with hub.sessionmaker() as session:
        client = await scope.scoped_client(session, principal, path.id)
        page = await timeline.timeline(session, client.id, cursor=query.cursor, limit=query.limit)
    return {"client_id": client.id, "items": page.items, "next_cursor": page.next_cursor}


class LoyaltyEntryOut(ResponseModel):
    """One entry of a client's loyalty ledger: enrolment, adjustment or redemption."""
    id: int
    kind: Literal["enroll", "adjust", "redeem"]
    coins: int
    reason: str
    reward: str | None
    actor: str | None
    at: str


class LoyaltyOut(ResponseModel):
    """Response body of a client's loyalty account: balance and ledger."""
    client_id: int
    enrolled_at: str
    balance: int
    entries: list[LoyaltyEntryOut]


class AdjustIn(RequestModel):
    """Body of a staff adjustment to a client's loyalty coins, with the reason recorded."""
    coins: int = Field(ge=-1_000_000, le=1_000_000)
    reason: str = Field(min_length=1, max_length=500)


class RedeemIn(RequestModel):
    """Body that redeems a reward from a client's loyalty coins."""
    reward: str = Field(min_length=1, max_length=200)


async def _loyalty(session: Any, client: Any) -> dict[str, Any]:
    account = await loyalty.account_of(session, client)
    rows = await loyalty.entries(session, client.id)
    return {"client_id": client.id, "enrolled_at": account.enrolled_at.isoformat(),
            "balance": await loyalty.ledger_balance(session, client.id),
            "entries": [{"id": e.id, "kind": e.kind, "coins": e.coins, "reason": e.reason,
                         "reward": e.reward, "actor": e.actor, "at": e.at.isoformat()}
                        for e in rows]}


@routes.get("/api/clients/{id}/loyalty", summary="A client's loyalty balance and activity",
            path_params=IdPath, response=LoyaltyOut, errors=(403, 404))
async def get_loyalty(request: web.Request, path: IdPath) -> dict[str, Any]:
    """The balance is the ledger's sum."""
    hub, principal = request.app[HUB_KEY], get_principal(request)
    async with hub.sessionmaker() as session:
        client = await scope.scoped_client(session, principal, path.id)
        await loyalty.require_enabled(session, hub, client)
        return await _loyalty(session, client)


@routes.post("/api/clients/{id}/loyalty", summary="Enroll a client in the loyalty program",
             path_params=IdPath, response=LoyaltyOut, status=201, errors=(403, 404, 409))
async def enroll_loyalty(request: web.Request, path: IdPath) -> dict[str, Any]:
    hub, principal = request.app[HUB_KEY], get_principal(request)
    async with hub.transaction() as session:
        client = await scope.scoped_client(session, principal, path.id)
        await loyalty.enroll(session, hub, client, actor=principal.actor)
        return await _loyalty(session, client)


@routes.post("/api/clients/{id}/loyalty/adjustments", summary="Add or take coins, with a reason",
             path_params=IdPath, body=AdjustIn, response=LoyaltyOut, status=201,
             errors=(403, 404, 409, 422))
async def adjust_loyalty(request: web.Request, path: IdPath, body: AdjustIn) -> dict[str, Any]:
    hub, principal = request.app[HUB_KEY], get_principal(request)
    async with hub.transaction() as session:
        client = await scope.scoped_client(session, principal, path.id)
        await loyalty.adjust(session, hub, client, body.coins, reason=body.reason,
                             actor=principal.actor)
        return await _loyalty(session, client)


@routes.post("/api/clients/{id}/loyalty/redemptions", summary="Fulfil a reward",
             path_params=IdPath, body=RedeemIn, response=LoyaltyOut, status=201,
             errors=(403, 404, 409, 422))
async def redeem_loyalty(request: web.Request, path: IdPath, body: RedeemIn) -> dict[str, Any]:
    """Only with enough coins (409 ``insufficient_coins`` otherwise)."""
    hub, principal = request.app[HUB_KEY], get_principal(request)
    async with hub.transaction() as session:
        client = await scope.scoped_client(session, principal, path.id)
        await loyalty.redeem(session, hub, client, body.reward, actor=principal.actor)
        return await _loyalty(session, client)


class SurveyOut(ResponseModel):
    """One survey answer, as listed for a client."""
    rating: int | None
    comment: str | None
    answered_at: str | None
    visit: str


class SurveysOut(ResponseModel):
    """Response body of a client's survey answers, newest first."""
    client_id: int
    items: list[SurveyOut]


@routes.get("/api/clients/{id}/surveys", summary="A client's survey answers, newest first",
            path_params=IdPath, response=SurveysOut, errors=(404,))
async def get_surveys(request: web.Request, path: IdPath) -> dict[str, Any]:
    hub, principal = request.app[HUB_KEY], get_principal(request)
    async with hub.sessionmaker() as session:
        client = await scope.scoped_client(session, principal, path.id)
        rows = await surveys.responses(session, client.id)
    return {"client_id": client.id, "items": [details.survey_json(s) for s in rows]}
