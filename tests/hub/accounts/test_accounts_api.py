"""Managing accounts: suspension (login, tokens and cases refused, images still stored), the
filters on every column, CSV export, the onboarding report formats, and tenant isolation."""

from __future__ import annotations

import asyncio
import csv
import io

import pytest
from sqlalchemy import func, select

from hub.accounts.onboarding import issue_password_link, set_password
from hub.db.models import AuditEntry, CallingAE, User
from hub.imaging.models import Instance, Study
from hub.messaging import links
from hub.testing.dicom import send_files, write_synthetic_series
from hub.testing.fixtures_dicom import dicom_port

from .accounts_world import World, add_practice


async def practice_with_login(world: World, slug: str, company: str, *, ae: str) -> tuple[int, int]:
    cid = world.companies[company]
    pid, accounts = await add_practice(world.hub, slug, {cid: ["DX"]})
    async with world.hub.transaction() as s:
        s.add(CallingAE(practice_id=pid, account_id=accounts[cid], ae_title=ae))
        user = User(email=f"vet@{slug}.example", name="Vet", role="practice_staff", practice_id=pid)
        s.add(user)
        await s.flush()
        link, _ = await issue_password_link(s, world.hub, user)
        link = links.unseal(links.secret_of(world.hub), link)  # the real link, as the email carries it
        await set_password(s, world.hub, link.split("token=")[1], "correct horse battery")
    return pid, accounts[cid]


async def login(world: World, slug: str):
    return await world.api.post("/api/login", json={"email": f"vet@{slug}.example",
                                                    "password": "correct horse battery"})


async def test_suspension_refuses_login_and_cases_but_keeps_images(world: World, tmp_path) -> None:
    pid, account_id = await practice_with_login(world, "elm-vets", "read-right", ae="ELM1")
    r = await login(world, "elm-vets")
    assert r.status == 200
    token = (await r.json())["token"]
    staff = {"Authorization": f"Bearer {token}"}

    company = await world.as_company("read-right")
    r = await company.patch(f"/api/accounts/{account_id}", json={"approved_for_access": False})
    assert r.status == 200 and (await r.json())["approved_for_access"] is False

    # logins and existing tokens are refused, with a message to contact the company
    r = await login(world, "elm-vets")
    assert r.status == 403 and (await r.json())["error"]["code"] == "access_suspended"
    r = await world.api.get("/api/whoami", headers=staff)
    assert r.status == 403 and "contact" in (await r.json())["error"]["message"]

    # images keep being received and stored
    paths = write_synthetic_series(tmp_path / "s", 2, modality="DX")
    results = await asyncio.to_thread(send_files, "127.0.0.1", dicom_port(world.hub), paths,
                                      called_ae="VETHUB", calling_ae="ELM1")
    assert all(res.status == 0 for res in results), results
    async with world.hub.sessionmaker() as s:
        assert (await s.execute(select(func.count()).select_from(Instance)
                                .where(Instance.practice_id == pid))).scalar() == 2
        study_id = (await s.execute(select(Study.id))).scalar_one()

    # case submission is refused (an operator submitting on the practice's behalf)
    op = await world.as_operator()
    r = await op.post("/api/cases", json={"study_id": study_id, "allow_incomplete": True})
    assert r.status == 403, await r.text()
    err = (await r.json())["error"]
    assert err["code"] == "account_not_approved" and "ReadRight" in err["message"]

    # re-approving restores access; every change is audited and in the history
    r = await company.patch(f"/api/accounts/{account_id}", json={"approved_for_access": True})
    assert r.status == 200
    assert (await login(world, "elm-vets")).status == 200
    assert (await world.api.get("/api/whoami", headers=staff)).status == 200
    r = await op.post("/api/cases", json={"study_id": study_id, "allow_incomplete": True})
    assert r.status == 201, await r.text()
    hist = await (await company.get(f"/api/accounts/{account_id}/history")).json()
    assert [h["change"] for h in hist["items"]] == ["suspended", "reinstated"]
    async with world.hub.sessionmaker() as s:
        actions = (await s.execute(select(AuditEntry.action).where(AuditEntry.entity == "account"))).scalars().all()
    assert actions == ["account.suspended", "account.reinstated"]


async def test_patch_refuses_unknown_fields_and_practice_staff(world: World) -> None:
    pid, account_id = await practice_with_login(world, "elm-vets", "read-right", ae="ELM1")
    company = await world.as_company("read-right")
    r = await company.patch(f"/api/accounts/{account_id}", json={"company_id": 2})
    assert r.status == 422 and (await r.json())["error"]["field"] == "company_id"
    r = await company.patch(f"/api/accounts/{account_id}", json={"approved_for_access": "no"})
    assert r.status == 422
    staff = await world.api.as_role("practice_staff", practice_id=pid)
    r = await staff.patch(f"/api/accounts/{account_id}", json={"approved_for_access": True})
    assert r.status == 403


async def _two_tenants(world: World) -> dict[str, int]:
    _, a1 = await practice_with_login(world, "elm-vets", "read-right", ae="ELM1")
    _, a2 = await practice_with_login(world, "oak-vets", "read-right", ae="OAK1")
    _, b1 = await practice_with_login(world, "pine-vets", "scan-co", ae="PINE1")
    async with world.hub.transaction() as s:
        from hub.db.models import Account

        acc = await s.get(Account, a2)
        acc.approved_for_access, acc.modalities, acc.auto_submit = False, ["DX", "US"], True
    return {"a1": a1, "a2": a2, "b1": b1}


FILTERS = [
    ("id", lambda ids: str(ids["a2"]), ["a2"]),
    ("practice_id", None, ["a1"]),
    ("practice", lambda ids: "oak", ["a2"]),
    ("practice_slug", lambda ids: "elm-vets", ["a1"]),
    ("company_id", lambda ids: "1", ["a1", "a2"]),
    ("company", lambda ids: "read-right", ["a1", "a2"]),
    ("company_name", lambda ids: "readr", ["a1", "a2"]),
    ("approved_for_access", lambda ids: "false", ["a2"]),
    ("modalities", lambda ids: "US", ["a2"]),
    ("modalities", lambda ids: "DX,US", ["a2"]),
    ("auto_submit", lambda ids: "true", ["a2"]),
    ("status", lambda ids: "active", ["a1", "a2"]),
    ("managed_by_config", lambda ids: "false", ["a1", "a2"]),
    ("created_at", lambda ids: "2000-01-01", []),
    ("created_at_from", lambda ids: "2000-01-01", ["a1", "a2"]),
    ("updated_at_to", lambda ids: "2000-01-01", []),
]


@pytest.mark.parametrize(("column", "value", "expected"), FILTERS,
                         ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(FILTERS)])
async def test_filter_on_every_column(world: World, column, value, expected) -> None:
    ids = await _two_tenants(world)
    company = await world.as_company("read-right")
    if column == "practice_id":
        async with world.hub.sessionmaker() as s:
            from hub.db.models import Account

            value_str = str((await s.get(Account, ids["a1"])).practice_id)
    else:
        value_str = value(ids)
    r = await company.get("/api/accounts", params={column: value_str})
    assert r.status == 200, await r.text()
    got = [item["id"] for item in (await r.json())["items"]]
    assert got == [ids[k] for k in expected]


async def test_every_column_has_a_filter() -> None:
    from hub.accounts.manage import COLUMNS
    from hub.accounts.manage import FILTERS as SERVICE_FILTERS

    assert set(COLUMNS) == set(SERVICE_FILTERS)
    tested = {c.removesuffix("_from").removesuffix("_to") for c, _, _ in FILTERS}
    assert tested == set(COLUMNS)


async def test_company_admin_sees_only_its_own_accounts(world: World) -> None:
    ids = await _two_tenants(world)
    a = await world.as_company("read-right")
    # read
    items = (await (await a.get("/api/accounts")).json())["items"]
    assert sorted(i["id"] for i in items) == sorted([ids["a1"], ids["a2"]])
    assert (await a.get(f"/api/accounts/{ids['b1']}")).status == 404
    assert (await a.get(f"/api/accounts/{ids['b1']}/history")).status == 404
    assert (await a.patch(f"/api/accounts/{ids['b1']}", json={"approved_for_access": False})).status == 404
    # filter
    for params in ({"company_id": str(world.companies["scan-co"])}, {"company": "scan-co"},
                   {"id": str(ids["b1"])}, {"practice": "pine"}):
        assert (await (await a.get("/api/accounts", params=params)).json())["items"] == []
    # export
    r = await a.get("/api/accounts", params={"format": "csv"})
    rows = list(csv.DictReader(io.StringIO(await r.text())))
    assert sorted(int(row["id"]) for row in rows) == sorted([ids["a1"], ids["a2"]])
    assert "pine-vets" not in await r.text()
    r = await a.get("/api/accounts", params={"format": "csv", "company": "scan-co"})
    assert list(csv.DictReader(io.StringIO(await r.text()))) == []
    # report
    r = await a.get("/api/reports/onboarding", params={"company": "scan-co"})
    assert r.status == 403
    r = await a.get("/api/reports/onboarding", params={"company": str(world.companies["scan-co"]),
                                                        "format": "csv"})
    assert r.status == 403
    # a typo is refused rather than returning everything
    r = await a.get("/api/accounts", params={"compnay": "scan-co"})
    assert r.status == 400 and (await r.json())["error"]["field"] == "compnay"
    # the operator sees all
    op = await world.as_operator()
    assert len((await (await op.get("/api/accounts")).json())["items"]) == 3


async def test_onboarding_report_formats_and_scope(world: World) -> None:
    base = {"practice_name": "Elm", "email": "a@elm.example"}
    for company in ("read-right", "read-right", "scan-co"):
        await world.api.post("/api/account-requests", json={**base, "company": company})
        world.clock.advance(days=1)
    a = await world.as_company("read-right")
    r = await a.get("/api/reports/onboarding")
    data = await r.json()
    assert len(data["items"]) == 2 and data["company"] == "ReadRight"
    assert all(i["state"] == "information_requested" for i in data["items"])
    r = await a.get("/api/reports/onboarding", params={"from": "2026-03-03", "to": "2026-03-03"})
    assert len((await r.json())["items"]) == 1
    r = await a.get("/api/reports/onboarding", params={"format": "csv"})
    assert r.headers["Content-Type"].startswith("text/csv")
    assert len(list(csv.DictReader(io.StringIO(await r.text())))) == 2
    r = await a.get("/api/reports/onboarding", params={"format": "pdf"})
    assert r.headers["Content-Type"] == "application/pdf" and (await r.read()).startswith(b"%PDF-")
    r = await a.get("/api/reports/onboarding", params={"format": "html"})
    html = await r.text()
    assert "@media print" in html and html.count("<tr>") == 3  # heading + 2 rows
    assert (await a.get("/api/reports/onboarding", params={"format": "xml"})).status == 422
    assert (await a.get("/api/reports/onboarding", params={"from": "March"})).status == 422
    staff = await world.api.as_role("practice_staff", practice_id=(await add_practice(world.hub, "x", {world.companies["scan-co"]: ["DX"]}))[0])
    assert (await staff.get("/api/reports/onboarding")).status == 403
    op = await world.as_operator()
    assert len((await (await op.get("/api/reports/onboarding")).json())["items"]) == 3
    r = await op.get("/api/reports/onboarding", params={"company": "scan-co"})
    assert len((await r.json())["items"]) == 1


async def test_config_declared_accounts_are_changed_in_the_config(world_factory) -> None:
    world = await world_factory(
        practices=[{"slug": "cfg-vets", "name": "Cfg Vets"}],
        accounts=[{"practice": "cfg-vets", "company": "read-right", "modalities": ["DX"]}],
    )
    company = await world.as_company("read-right")
    [item] = (await (await company.get("/api/accounts", params={"managed_by_config": "true"})).json())["items"]
    r = await company.patch(f"/api/accounts/{item['id']}", json={"approved_for_access": False})
    assert r.status == 409 and (await r.json())["error"]["code"] == "managed_by_config"


async def test_account_changed_is_fired_after_commit(world_factory) -> None:
    from hub.hookspecs import hookimpl

    seen: list[tuple[int, bool, bool]] = []

    class Listener:
        @hookimpl
        def vethub_account_changed(self, hub, account, before, after):
            async def _record() -> None:
                async with hub.transaction() as s:  # a listener may write: the change is committed
                    await s.get(User, 1)
                seen.append((account.id, before["approved_for_access"], after["approved_for_access"]))

            return _record()

    world = await world_factory(plugins=[("listener", Listener())])
    pid, account_id = await practice_with_login(world, "elm-vets", "read-right", ae="ELM1")
    company = await world.as_company("read-right")
    await company.patch(f"/api/accounts/{account_id}", json={"approved_for_access": False})
    assert seen == []
    await world.run_jobs()
    assert seen == [(account_id, True, False)]
