"""Routes declared with ``auth_in_read=True`` check the bearer token in the same hand-off as
their read (:func:`hub.web.auth.read_as_caller`). They keep every promise of the middleware: a
refused token answers 401/403 before any of the route's data is read or returned, whatever else
is wrong with the request; revocation, expiry, a disabled user and a suspended practice take
effect on the very next request; and a route that answers without reading still checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select, update

from hub.auth import issue_token, revoke_token
from hub.clock import FrozenClock
from hub.core import Hub
from hub.db.models import Account, ApiToken, Practice, User
from hub.testing.fixtures_core import ApiClient
from hub.web.app import create_app
from hub.web.contract import endpoint_of

CONFIG: dict[str, Any] = {
    "companies": [{"slug": "rads", "name": "Rads"}],
    "practices": [{"slug": "clinic-a", "name": "Clinic A"}],
    "accounts": [{"practice": "clinic-a", "company": "rads"}],
}
START = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)

#: each route that checks its token in its read, with a query it answers 200 to
READS = ["/api/practices", "/api/accounts?status=active", "/api/accounts?format=csv", "/api/cases",
         "/api/clients?q=smith"]
#: requests that are wrong in another way too: the token is still what they are told about
ALSO_BAD = ["/api/cases?status=bogus", "/api/accounts?nope=1", "/api/accounts?format=xml",
            "/api/clients?cursor=not-a-cursor", "/api/clients?q=smith&practice_id=99999",
            "/api/clients?limit=0"]


@pytest.fixture
async def hub(hub_factory: Any) -> Hub:
    return await hub_factory(CONFIG, clock=FrozenClock(START))


@pytest.fixture
async def client(hub: Hub) -> Any:
    c = TestClient(TestServer(create_app(hub, start_hub=False, run_workers=False), host="127.0.0.1", port=0))
    await c.start_server()
    yield c
    await c.close()


async def _token(hub: Hub, **kw: Any) -> tuple[str, int]:
    async with hub.transaction() as session:
        token, row = await issue_token(session, **{"role": "operator", **kw})
        return token, row.id


def _as(client: TestClient, hub: Hub, token: str) -> ApiClient:
    return ApiClient(client, hub, {"Authorization": f"Bearer {token}"})


async def _statuses(caller: ApiClient, paths: list[str]) -> dict[str, int]:
    return {path: (await caller.get(path)).status for path in paths}


def test_the_hot_reads_are_declared_to_check_in_their_read(hub: Hub) -> None:
    app = create_app(hub, start_hub=False, run_workers=False)
    declared = {route.resource.canonical for route in app.router.routes()
                if route.resource is not None and (ep := endpoint_of(route.handler)) is not None
                and ep.auth_in_read}
    assert declared == {path.partition("?")[0] for path in READS}


@pytest.mark.parametrize("header", [None, "Bearer", "Basic dXNlcjpwYXNz", "Bearer vh_wrong", "Bearer nottoken"])
async def test_a_missing_or_wrong_token_is_401_on_every_such_route(client: TestClient, hub: Hub,
                                                                   header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    for path in READS + ALSO_BAD:
        response = await client.get(path, headers=headers)
        body = await response.json()
        assert response.status == 401, (path, body)
        assert body["error"]["code"] in {"missing_token", "invalid_token"}
        assert "items" not in body


async def test_other_faults_are_told_only_to_a_valid_token(client: TestClient, hub: Hub) -> None:
    token, _ = await _token(hub)
    assert await _statuses(_as(client, hub, token), ALSO_BAD) == {
        "/api/cases?status=bogus": 422, "/api/accounts?nope=1": 400, "/api/accounts?format=xml": 422,
        "/api/clients?cursor=not-a-cursor": 422, "/api/clients?q=smith&practice_id=99999": 404,
        "/api/clients?limit=0": 422}


async def test_revocation_takes_effect_on_the_next_request(client: TestClient, hub: Hub) -> None:
    token, token_id = await _token(hub)
    caller = _as(client, hub, token)
    assert set((await _statuses(caller, READS)).values()) == {200}
    async with hub.transaction() as session:
        assert await revoke_token(session, token_id, hub.clock.now())
    assert set((await _statuses(caller, READS + ALSO_BAD)).values()) == {401}


async def test_expiry_takes_effect_at_its_instant(client: TestClient, hub: Hub) -> None:
    assert isinstance(hub.clock, FrozenClock)
    token, _ = await _token(hub, expires_at=START + timedelta(minutes=5))
    caller = _as(client, hub, token)
    hub.clock.set(START + timedelta(minutes=5) - timedelta(microseconds=1))
    assert set((await _statuses(caller, READS)).values()) == {200}
    hub.clock.set(START + timedelta(minutes=5))
    for path in READS:
        response = await caller.get(path)
        assert (response.status, (await response.json())["error"]["code"]) == (401, "token_expired")


async def test_a_disabled_user_is_refused_on_the_next_request(client: TestClient, hub: Hub) -> None:
    async with hub.transaction() as session:
        user = User(email="op@example.org", role="operator", is_active=True)
        session.add(user)
        await session.flush()
        user_id = user.id
    token, _ = await _token(hub, user_id=user_id)
    caller = _as(client, hub, token)
    assert set((await _statuses(caller, READS)).values()) == {200}
    async with hub.transaction() as session:
        await session.execute(update(User).where(User.id == user_id).values(is_active=False))
    assert set((await _statuses(caller, READS + ALSO_BAD)).values()) == {401}


async def test_a_suspended_practice_is_refused_on_the_next_request(client: TestClient, hub: Hub) -> None:
    practice_id = await hub.read(lambda conn: conn.execute(select(Practice.id)).scalar_one())
    token, _ = await _token(hub, role="practice_staff", practice_id=practice_id)
    caller = _as(client, hub, token)
    assert set((await _statuses(caller, READS)).values()) == {200}
    async with hub.transaction() as session:
        await session.execute(update(Account).where(Account.practice_id == practice_id)
                              .values(approved_for_access=False))
    for path in READS + ALSO_BAD:
        response = await caller.get(path)
        body = await response.json()
        assert (response.status, body["error"]["code"]) == (403, "access_suspended"), path


async def test_a_route_that_answers_without_reading_still_checks(client: TestClient, hub: Hub) -> None:
    """``format=xml`` fails before the read: the middleware checks the token itself when the
    handler did not, before the answer leaves."""
    token, token_id = await _token(hub)
    caller = _as(client, hub, token)
    assert (await caller.get("/api/accounts?format=xml")).status == 422
    async with hub.transaction() as session:
        await session.execute(update(ApiToken).where(ApiToken.id == token_id).values(revoked_at=START))
    assert (await caller.get("/api/accounts?format=xml")).status == 401
