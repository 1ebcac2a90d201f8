"""A company cannot attach a practice the hub already knows: a request naming its login email
(or its practice email) waits for the practice itself, with and without ``auto_approve``."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from hub.accounts.models import AccountRequest
from hub.db.models import Account, User

from .accounts_world import READ_RIGHT, World, add_practice

FULL = {
    "practice_name": "Totally Elm Vets", "contact_name": "Mallory", "email": "ada@elm.example",
    "phone": "+441134960000", "pims": "ezyVet", "imaging_software": "Vet-Rocket", "modalities": ["DX"],
    "address": {"line1": "1 Elm St", "city": "Leeds", "postcode": "LS1 1AA", "country": "GB"},
}


def body_of(msg) -> str:
    part = msg.get_body(preferencelist=("plain",))
    return part.get_content() if part is not None else msg.get_content()


async def known_practice(world: World) -> int:
    pid, _ = await add_practice(world.hub, "elm-vets", {world.companies["read-right"]: ["DX"]},
                                email="desk@elm.example")
    async with world.hub.transaction() as s:
        s.add(User(email="ada@elm.example", name="Ada", role="practice_staff", practice_id=pid, is_active=True))
    return pid


async def scan_co_accounts(world: World, pid: int) -> list[Account]:
    async with world.hub.sessionmaker() as s:
        return list((await s.execute(select(Account).where(
            Account.practice_id == pid, Account.company_id == world.companies["scan-co"]))).scalars())


async def practice_ids_seen_by(world: World, slug: str) -> list[int]:
    company = await world.as_company(slug)
    return [p["id"] for p in (await (await company.get("/api/practices")).json())["items"]]


@pytest.mark.parametrize("auto_approve", [False, True], ids=["company-accepts", "auto-approve"])
async def test_a_new_company_alone_never_attaches_a_known_practice(world_factory, auto_approve) -> None:
    world = await world_factory(companies=[
        {"slug": "read-right", "name": "ReadRight", "email": READ_RIGHT, "modalities": ["DX"]},
        {"slug": "scan-co", "name": "ScanCo", "email": "desk@scanco.example", "modalities": ["DX"],
         "auto_approve": auto_approve},
    ])
    pid = await known_practice(world)
    r = await world.api.post("/api/account-requests", json={**FULL, "company": "scan-co"})
    assert r.status == 201, await r.text()
    req = await r.json()
    if not auto_approve:
        assert req["state"] == "awaiting_approval"
        scan = await world.as_company("scan-co")
        r = await scan.post(f"/api/account-requests/{req['id']}/accept")
        assert r.status == 200, await r.text()
        req = await r.json()
    assert req["state"] == "awaiting_practice" and req["account_id"] is None
    assert await scan_co_accounts(world, pid) == []
    assert pid not in await practice_ids_seen_by(world, "scan-co")

    # the new company cannot confirm for the practice, nor can another practice's staff
    scan = await world.as_company("scan-co")
    assert (await scan.post(f"/api/account-requests/{req['id']}/confirm")).status == 403
    other_pid, _ = await add_practice(world.hub, "oak-vets", {world.companies["read-right"]: ["DX"]})
    other = await world.api.as_role("practice_staff", practice_id=other_pid)
    assert (await other.post(f"/api/account-requests/{req['id']}/confirm")).status == 404
    assert await scan_co_accounts(world, pid) == []

    # the practice's own addresses get the signed link; a tampered link is refused
    await world.run_jobs()
    asks = [m for m in world.mails() if "Confirm" in str(m["Subject"])]
    assert sorted(str(m["To"]) for m in asks) == ["ada@elm.example", "desk@elm.example"]
    url = re.search(r"(/account-requests/\d+/confirm\?\S+)", body_of(asks[0])).group(1)
    path, query = url.split("?", 1)
    fields = dict(part.split("=", 1) for part in query.split("&"))
    assert (await world.api.get(url)).status == 200
    for bad in ({**fields, "sig": fields["sig"].upper()}, {**fields, "expires": "0" + fields["expires"]},
                {**fields, "sig": "0" * 64}):
        assert (await world.api.post(path, data=bad)).status == 403
    assert await scan_co_accounts(world, pid) == []
    r = await world.api.post(path, data=fields)
    assert r.status == 200, await r.text()
    [account] = await scan_co_accounts(world, pid)
    assert account.approved_for_access and account.status == "active"
    assert pid in await practice_ids_seen_by(world, "scan-co")
    async with world.hub.sessionmaker() as s:
        row = await s.get(AccountRequest, req["id"])
        assert row.state == "accepted" and row.account_id == account.id


async def test_practice_staff_confirm_through_the_api(world: World) -> None:
    pid = await known_practice(world)
    r = await world.api.post("/api/account-requests", json={**FULL, "company": "scan-co",
                                                            "email": "desk@elm.example"})
    req = await r.json()
    scan = await world.as_company("scan-co")
    assert (await (await scan.post(f"/api/account-requests/{req['id']}/accept")).json())["state"] == \
        "awaiting_practice"
    staff = await world.api.as_role("practice_staff", practice_id=pid)
    waiting = (await (await staff.get("/api/account-requests")).json())["items"]
    assert [w["id"] for w in waiting] == [req["id"]]
    assert (await staff.get(f"/api/account-requests/{req['id']}")).status == 200
    r = await staff.post(f"/api/account-requests/{req['id']}/confirm")
    assert r.status == 200, await r.text()
    assert (await r.json())["state"] == "accepted"
    assert len(await scan_co_accounts(world, pid)) == 1
    assert (await staff.post(f"/api/account-requests/{req['id']}/confirm")).status == 409
    assert (await (await staff.get("/api/account-requests")).json())["items"] == []  # no longer waiting
    assert (await staff.get(f"/api/account-requests/{req['id']}")).status == 404
