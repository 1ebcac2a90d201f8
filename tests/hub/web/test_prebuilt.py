"""Routes that answer with :class:`hub.web.contract.Prebuilt` skip validating their rows into
the response model: their answers must still be exactly what the model would have written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic_core import to_json
from sqlalchemy import select

from hub.accounts import manage
from hub.auth import Principal
from hub.clients import scope as client_scope
from hub.clients import search
from hub.clients.api import ClientItem, ClientPage, client_item
from hub.core import Hub
from hub.db.models import Account, Company, Practice
from hub.imaging.api_models import CaseList, case_summary
from hub.imaging.models import Case, Study
from hub.pims.models import Client, Patient
from hub.pims.normalise import search_key
from hub.testing.fixtures_core import ApiClient
from hub.web.api_core import PracticeList, practice_json

CONFIG: dict[str, Any] = {
    "companies": [{"slug": "rads", "name": "Rads"}],
    "practices": [{"slug": "clinic-a", "name": "Clinic A", "email": "a@example.org",
                   "address": {"line1": "1 Main St", "city": "Springfield"}},
                  {"slug": "clinic-b", "name": "Clinic B"}],
    "accounts": [{"practice": "clinic-a", "company": "rads"}, {"practice": "clinic-b", "company": "rads"}],
}


@pytest.fixture
async def hub(hub_factory: Any) -> Hub:
    return await hub_factory(CONFIG)


async def _cases(hub: Hub) -> None:
    """Cases in every state that changes the summary: overdue by deadline, marked overdue,
    delivered, one with no patient data; timestamps with and without a fraction of a second."""
    now = hub.clock.now()
    async with hub.transaction() as session:
        for practice_id, account_id, company_id in (await session.execute(
                select(Account.practice_id, Account.id, Account.company_id))).all():
            for i, (status, due, marked) in enumerate([
                    ("submitted", now - timedelta(hours=1), None),
                    ("delivered", now + timedelta(days=1), now - timedelta(minutes=5)),
                    ("reported", None, None)]):
                study = Study(practice_id=practice_id, study_instance_uid=f"1.2.3.{practice_id}.{i}",
                              modalities=["CT"], first_received_at=now, last_received_at=now)
                session.add(study)
                await session.flush()
                session.add(Case(practice_id=practice_id, study_id=study.id, account_id=account_id,
                                 company_id=company_id, status=status, submitted_by="staff:test",
                                 due_at=due, overdue_at=marked, question="fracture?",
                                 patient={"name": "Rex"} if i else {},
                                 created_at=datetime(2026, 3, 1, 12, 0, 0, 123456 * i, tzinfo=UTC)))


async def _body(caller: ApiClient, path: str) -> bytes:
    response = await caller.get(path)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    return bytes(await response.read())


async def test_the_practice_list_is_what_the_model_writes(api: ApiClient, hub: Hub) -> None:
    operator = await api.as_role("operator")
    body = await _body(operator, "/api/practices")
    async with hub.read_session() as session:
        practices = (await session.execute(select(Practice).order_by(Practice.id))).scalars().all()
        expected = PracticeList.model_validate({"items": [practice_json(p) for p in practices]})
    assert len(expected.items) == 2
    assert body == expected.model_dump_json().encode()
    PracticeList.model_validate_json(body)  # the declared model (extra="forbid") takes it


@pytest.mark.parametrize("query", ["", "?overdue=true", "?overdue=false", "?status=delivered"])
async def test_the_case_list_is_what_the_model_writes(api: ApiClient, hub: Hub, query: str) -> None:
    await _cases(hub)
    staff_practice = (await hub.read(lambda conn: conn.execute(select(Practice.id)).scalars().first()))
    company = (await hub.read(lambda conn: conn.execute(select(Account.company_id)).scalars().first()))
    for caller, where in [
            (await api.as_role("operator"), None),
            (await api.as_role("practice_staff", practice_id=staff_practice), Case.practice_id == staff_practice),
            (await api.as_role("company_admin", company_id=company), Case.company_id == company)]:
        body = await _body(caller, f"/api/cases{query}")
        now = hub.clock.now()
        async with hub.read_session() as session:
            stmt = select(Case).order_by(Case.id.desc())
            if where is not None:
                stmt = stmt.where(where)
            summaries = [case_summary(c, now) for c in (await session.execute(stmt)).scalars()]
        if "overdue" in query:
            summaries = [s for s in summaries if s.overdue == query.endswith("true")]
        if "status" in query:
            summaries = [s for s in summaries if s.status == "delivered"]
        assert summaries, "the seeded cases cover every filter"
        assert body == CaseList(items=summaries).model_dump_json().encode()
        CaseList.model_validate_json(body)



async def test_the_account_list_is_what_account_json_writes(api: ApiClient, hub: Hub) -> None:
    """Read as plain rows now: the items are still :func:`manage.account_json` of the ORM
    objects, under every filter kind, and the CSV export lists the same accounts."""
    operator = await api.as_role("operator")
    async with hub.transaction() as session:  # one account that differs: suspended, no modalities
        account = (await session.execute(select(Account).order_by(Account.id))).scalars().first()
        assert account is not None
        account.approved_for_access, account.modalities = False, []
    async with hub.read_session() as session:
        stmt = (select(Account, Practice, Company).join(Practice, Practice.id == Account.practice_id)
                .join(Company, Company.id == Account.company_id).order_by(Account.id))
        every = [manage.account_json(a, p, c) for a, p, c in (await session.execute(stmt)).all()]
    for query, expected in [("", every), ("?status=active", every),
                            ("?approved_for_access=false", every[:1]), ("?practice=inic%20b", every[1:])]:
        assert await _body(operator, f"/api/accounts{query}") == to_json({"items": expected}), query
    exported = (await (await operator.get("/api/accounts?format=csv")).read()).decode().splitlines()
    assert [line.split(",")[0] for line in exported] == ["id", *(str(a["id"]) for a in every)]


async def _clients(hub: Hub) -> None:
    """Clients that differ in every way an item does: no first name, inactive, comms off, no
    active patient, an email or none."""
    now = hub.clock.now()
    practice_id = await hub.read(lambda conn: conn.execute(select(Practice.id)).scalars().first())
    async with hub.transaction() as session:
        for n, (first, status, comms_off, patient) in enumerate([
                ("Ann", "active", False, "active"), (None, "active", False, "active"),
                ("Bob", "inactive", False, "active"), ("Cy", "active", True, "active"),
                ("Di", "active", False, "inactive"), ("Ed", "active", False, None)]):
            session.add(Client(practice_id=practice_id, external_id=f"c{n}", first_name=first,
                               last_name="Smith", status=status, comms_disabled=comms_off,
                               email=f"c{n}@example.org" if n % 2 else None, phone_mobile="+12175550143",
                               synced_at=now, name_key=search_key(f"{first or ''} smith"),
                               surname_key=search_key(f"smith {first or ''}")))
            if patient is not None:
                session.add(Patient(practice_id=practice_id, external_id=f"p{n}", client_external_id=f"c{n}",
                                    name="Rex", status=patient, synced_at=now, name_key="rex"))


@pytest.mark.parametrize("query", ["q=smith", "q=smith&limit=2", "q=c3", "q=(217) 555-0143&limit=4",
                                   "status=inactive", "has_email=true", "limit=4"])
async def test_the_client_search_is_what_the_model_writes(api: ApiClient, hub: Hub, query: str) -> None:
    """Plain rows now: every page must be the model's, of the clients the ORM search finds,
    and its cursor must lead to the same next page."""
    await _clients(hub)
    operator = await api.as_role("operator")
    params = dict(p.split("=") for p in query.split("&"))
    cursor: str | None = None
    pages = 0
    while pages == 0 or cursor is not None:
        path = f"/api/clients?{query}" + (f"&cursor={cursor}" if cursor else "")
        body = await _body(operator, path)
        async with hub.read_session() as session:
            ids = await client_scope.practice_ids(session, Principal("operator"))
            page = await search.find_clients(
                session, ids, params.get("q"), status=params.get("status"),
                has_email=True if "has_email" in params else None, cursor=cursor,
                limit=int(params.get("limit", 50)))
            owners = await search.active_patient_owners(session, page.items)
        expected = ClientPage(items=[ClientItem(**client_item(c, owners)) for c in page.items],
                              next_cursor=page.next_cursor)
        assert expected.items, path
        assert body == expected.model_dump_json().encode(), path
        ClientPage.model_validate_json(body)
        cursor, pages = page.next_cursor, pages + 1
    assert pages > 1 or "limit" not in query  # the small pages did follow a cursor


def test_prebuilt_json_writes_what_pydantic_writes() -> None:
    """orjson writes the prebuilt answers; for every type such a row holds, the bytes are the
    ones pydantic's serializer writes (what the model-built answers were)."""
    from decimal import Decimal
    from enum import StrEnum
    from uuid import UUID

    from pydantic_core import to_json

    from hub.web.contract import prebuilt_json

    class Colour(StrEnum):
        RED = "red"

    value = {"items": [{
        "int": 7, "neg": -2**40, "float": 1.5, "tiny": 1e-7, "big": 1e300, "true": True, "none": None,
        "text": "Zoë \"quoted\" \\ \n\t\u0001 \u2028 🐕", "enum": Colour.RED, "list": [1, "a", None],
        "nested": {"a": {"b": []}}, "utc": datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC),
        "utc_whole": datetime(2026, 3, 1, 12, 0, tzinfo=UTC), "naive": datetime(2026, 3, 1, 12, 0),
        "offset": datetime(2026, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=-5))),
        "decimal": Decimal("1.10"), "uuid": UUID(int=5),
    }]}
    assert prebuilt_json(value) == to_json(value)


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
async def test_json_columns_read_back_what_json_dumps_stored(hub: Hub, db_url: str) -> None:
    """JSON columns decode with orjson, and with json where orjson refuses (NaN, integers
    beyond 64 bits): anything stored still reads back."""
    import math

    from hub.db.models import Company

    stored = {"nan": float("nan"), "huge": 2**70, "text": "Zoë", "list": [1, 2.5, None]}
    if not hub.is_sqlite:
        stored.pop("nan")  # PostgreSQL's json type refuses NaN on the way in
    async with hub.transaction() as session:
        session.add(Company(slug="json-co", name="J", email=None, modalities=[], settings=stored))
    settings = await hub.read(lambda conn: conn.execute(
        select(Company.settings).where(Company.slug == "json-co")).scalar_one())
    assert settings["huge"] == 2**70 and settings["text"] == "Zoë" and settings["list"] == [1, 2.5, None]
    if hub.is_sqlite:
        assert math.isnan(settings["nan"])
