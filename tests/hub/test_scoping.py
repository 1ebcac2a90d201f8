"""Tenant scoping (hub/auth.py, Principal) from each side, so a swapped comparison shows.

Written against the mutants tools/mutation.py found surviving in hub/auth.py: a company admin
of the company with the larger id, practice staff listing companies, and the operator-only
send to a bare address.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select, update

from hub.core import Hub
from hub.db.models import Account, Company, Practice
from hub.messaging.models import Communication
from hub.testing.fixtures_core import ApiClient, database_rows
from hub.web.app import create_app

TENANTS: dict[str, Any] = {
    "companies": [{"slug": "rads-a", "name": "Rads A"}, {"slug": "rads-b", "name": "Rads B"}],
    "practices": [{"slug": "clinic-a", "name": "Clinic A"}, {"slug": "clinic-b", "name": "Clinic B"}],
    "accounts": [{"practice": "clinic-a", "company": "rads-a"},
                 {"practice": "clinic-b", "company": "rads-b"}],
}


@pytest.fixture
async def tenants(hub_factory: Any) -> Hub:
    return await hub_factory(TENANTS)


@pytest.fixture
async def client(tenants: Hub) -> Any:
    c = TestClient(TestServer(create_app(tenants, start_hub=False, run_workers=False),
                              host="127.0.0.1", port=0))
    await c.start_server()
    yield ApiClient(c, tenants)
    await c.close()


async def _ids(hub: Hub, model: Any) -> dict[str, int]:
    async with hub.sessionmaker() as s:
        return {row.slug: row.id for row in (await s.execute(select(model))).scalars()}


async def _slugs(caller: ApiClient, path: str) -> list[str]:
    response = await caller.get(path)
    assert response.status == 200, await response.text()
    return [item["slug"] for item in (await response.json())["items"]]


@pytest.mark.parametrize("letter", ["a", "b"])
async def test_each_company_admin_sees_its_own_practices_only(client: ApiClient, tenants: Hub,
                                                              letter: str) -> None:
    companies, practices = await _ids(tenants, Company), await _ids(tenants, Practice)
    other = "b" if letter == "a" else "a"
    admin = await client.as_role("company_admin", company_id=companies[f"rads-{letter}"])
    assert await _slugs(admin, "/api/practices") == [f"clinic-{letter}"]
    assert await _slugs(admin, "/api/companies") == [f"rads-{letter}"]
    assert (await admin.get(f"/api/practices/{practices[f'clinic-{other}']}")).status == 404


@pytest.mark.parametrize("letter", ["a", "b"])
async def test_practice_staff_see_the_companies_they_hold_accounts_with(
    client: ApiClient, tenants: Hub, letter: str
) -> None:
    practices = await _ids(tenants, Practice)
    staff = await client.as_role("practice_staff", practice_id=practices[f"clinic-{letter}"])
    assert await _slugs(staff, "/api/companies") == [f"rads-{letter}"]
    assert await _slugs(staff, "/api/practices") == [f"clinic-{letter}"]


async def test_only_an_operator_sends_to_an_address_without_a_practice(client: ApiClient,
                                                                       tenants: Hub) -> None:
    companies, practices = await _ids(tenants, Company), await _ids(tenants, Practice)
    message = {"to": "someone@example.org", "template": "message", "category": "account",
               "context": {"subject": "Hello", "body": "A note."}}
    callers = [await client.as_role("company_admin", company_id=companies["rads-a"]),
               await client.as_role("practice_staff", practice_id=practices["clinic-a"])]
    before = await database_rows(tenants)
    # a company admin may not send to a bare address; practice staff may not send operational
    # ("account") mail at all
    for caller, (status, code) in zip(callers, [(403, "operators_only"), (422, "account_to_client")],
                                      strict=True):
        refused = await caller.post("/api/communications", json=message)
        assert (refused.status, (await refused.json())["error"]["code"]) == (status, code)
    assert await database_rows(tenants) == before

    operator = await client.as_role("operator")
    sent = await operator.post("/api/communications", json=message)
    assert sent.status == 201, await sent.text()
    async with tenants.sessionmaker() as s:
        [comm] = (await s.execute(select(Communication))).scalars()
    assert (comm.address, comm.practice_id) == ("someone@example.org", None)


@pytest.mark.parametrize("letter", ["a", "b"])
async def test_staff_of_a_suspended_practice_are_refused_whichever_its_id(
    client: ApiClient, tenants: Hub, letter: str
) -> None:
    practices = await _ids(tenants, Practice)
    other = "b" if letter == "a" else "a"
    staff = await client.as_role("practice_staff", practice_id=practices[f"clinic-{letter}"])
    bystander = await client.as_role("practice_staff", practice_id=practices[f"clinic-{other}"])
    async with tenants.transaction() as s:
        await s.execute(update(Account).where(Account.practice_id == practices[f"clinic-{letter}"])
                        .values(approved_for_access=False))
    refused = await staff.get("/api/practices")
    assert refused.status == 403 and (await refused.json())["error"]["code"] == "access_suspended"
    assert (await bystander.get("/api/practices")).status == 200  # the other practice goes on


async def test_the_operator_sees_every_company_and_practice(client: ApiClient) -> None:
    operator = await client.as_role("operator")
    assert await _slugs(operator, "/api/companies") == ["rads-a", "rads-b"]
    assert await _slugs(operator, "/api/practices") == ["clinic-a", "clinic-b"]
