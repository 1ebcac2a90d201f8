"""The token middleware and tenant scoping of the first routes."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, update

from hub.core import Hub
from hub.db.models import Account, AuditEntry, Company, Practice
from hub.testing.fixtures_core import ApiClient

TENANTS: dict[str, Any] = {
    "companies": [{"slug": "rads-a", "name": "Rads A"}, {"slug": "rads-b", "name": "Rads B"}],
    "practices": [{"slug": "clinic-a", "name": "Clinic A"}, {"slug": "clinic-b", "name": "Clinic B"}],
    "accounts": [{"practice": "clinic-a", "company": "rads-a"}, {"practice": "clinic-b", "company": "rads-b"}],
}


@pytest.fixture
async def tenants(hub_factory: Any) -> Hub:
    return await hub_factory(TENANTS)


@pytest.fixture
async def client(tenants: Hub) -> Any:
    from aiohttp.test_utils import TestClient, TestServer

    from hub.web.app import create_app

    c = TestClient(TestServer(create_app(tenants, start_hub=False, run_workers=False), host="127.0.0.1", port=0))
    await c.start_server()
    yield ApiClient(c, tenants)
    await c.close()


async def ids(hub: Hub, model: Any) -> dict[str, int]:
    async with hub.sessionmaker() as s:
        return {row.slug: row.id for row in (await s.execute(select(model))).scalars()}


async def test_open_routes_need_no_token(client: ApiClient) -> None:
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200 and (await ready.json())["checks"]["database"]["ok"] is True
    metrics = await client.get("/metrics")
    assert metrics.status == 200 and "vethub_job_queue" in await metrics.text()


@pytest.mark.parametrize("header", [None, "Bearer", "Basic dXNlcjpwYXNz", "Bearer vh_wrong", "Bearer nottoken"])
async def test_missing_or_wrong_token_is_refused(client: ApiClient, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    response = await client.get("/api/practices", headers=headers)
    assert response.status == 401
    body = await response.json()
    assert body["error"]["code"] in {"missing_token", "invalid_token"}


async def test_company_admin_sees_only_its_tenant(client: ApiClient, tenants: Hub) -> None:
    companies, practices = await ids(tenants, Company), await ids(tenants, Practice)
    admin_a = await client.as_role("company_admin", company_id=companies["rads-a"])
    body = await (await admin_a.get("/api/practices")).json()
    assert [p["slug"] for p in body["items"]] == ["clinic-a"]
    assert [c["slug"] for c in (await (await admin_a.get("/api/companies")).json())["items"]] == ["rads-a"]
    assert (await admin_a.get(f"/api/practices/{practices['clinic-a']}")).status == 200
    # another tenant's practice does not exist, as far as this caller can tell
    other = await admin_a.get(f"/api/practices/{practices['clinic-b']}")
    assert other.status == 404


async def test_practice_staff_and_operator_scopes(client: ApiClient, tenants: Hub) -> None:
    practices = await ids(tenants, Practice)
    staff_b = await client.as_role("practice_staff", practice_id=practices["clinic-b"])
    body = await (await staff_b.get("/api/practices")).json()
    assert [p["id"] for p in body["items"]] == [practices["clinic-b"]]
    assert (await staff_b.get(f"/api/practices/{practices['clinic-a']}")).status == 404
    assert (await staff_b.get("/api/jobs")).status == 403

    operator = await client.as_role("operator")
    body = await (await operator.get("/api/practices")).json()
    assert {p["slug"] for p in body["items"]} == {"clinic-a", "clinic-b"}
    assert (await operator.get("/api/jobs")).status == 200


async def test_suspended_practice_token_is_refused(client: ApiClient, tenants: Hub) -> None:
    practices = await ids(tenants, Practice)
    staff = await client.as_role("practice_staff", practice_id=practices["clinic-a"])
    assert (await staff.get("/api/practices")).status == 200
    async with tenants.transaction() as s:
        await s.execute(update(Account).where(Account.practice_id == practices["clinic-a"]).values(approved_for_access=False))
    refused = await staff.get("/api/practices")
    assert refused.status == 403
    assert "suspended" in (await refused.json())["error"]["message"]


async def test_cli_create_token_prints_it_last_and_audits(write_config: Any, tmp_path: Any) -> None:
    import subprocess
    import sys

    path = write_config(TENANTS)
    upgraded = subprocess.run([sys.executable, "-m", "hub.cli", "db", "upgrade", "--config", str(path)],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert upgraded.returncode == 0, upgraded.stderr
    result = subprocess.run(
        [sys.executable, "-m", "hub.cli", "admin", "create-token", "--config", str(path), "--role", "company_admin",
         "--company", "rads-a", "--name", "ci"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("vh_") and " " not in token

    from hub.config import load_config
    from hub.core import create_hub

    hub = create_hub(load_config(path))
    await hub.start(lifecycle=False)
    try:
        async with hub.sessionmaker() as s:
            from hub.auth import authenticate

            principal = await authenticate(s, token, hub.clock.now())
            assert principal.role == "company_admin"
            entries = (await s.execute(select(AuditEntry).where(AuditEntry.action == "create_token"))).scalars().all()
            assert len(entries) == 1 and entries[0].after["role"] == "company_admin"
    finally:
        await hub.stop()

    bad = subprocess.run(
        [sys.executable, "-m", "hub.cli", "admin", "create-token", "--config", str(path), "--role", "company_admin"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "needs a company" in bad.stderr
