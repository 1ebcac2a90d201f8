"""Switching back to a company the practice had before lands on a usable account (history kept),
on every path; a switch request keeps the response window it was notified under."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from hub.accounts.models import AccountHistory, SwitchRequest
from hub.db.models import Account, CallingAE

from .accounts_world import T0, World, add_case, add_practice


def body(current: str, new: str) -> dict:
    return {"current_company": current, "new_company": new, "requester_name": "Dr Ada Brown",
            "requester_email": "ada@elm.example", "requester_authorised": True,
            "statement": f"We wish to move our account to {new}. Ada Brown, practice owner."}


def link(world: World, to: str, action: str) -> tuple[str, dict[str, str]]:
    mail = [m for m in world.mails(to) if "/switch-requests/" in m.get_body(("plain",)).get_content()][-1]
    for line in mail.get_body(("plain",)).get_content().splitlines():
        if f"action={action}" in line:
            parts = urlsplit(line.split(":", 1)[1].strip())
            return parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()}
    raise AssertionError("no link")


@pytest.mark.parametrize("path", ["at-once", "approval", "deadline"])
async def test_switch_away_and_back(world: World, path: str) -> None:
    rr, sc = world.companies["read-right"], world.companies["scan-co"]
    pid, accounts = await add_practice(world.hub, "elm-vets", {rr: ["DX"]})
    async with world.hub.transaction() as s:
        s.add(CallingAE(practice_id=pid, account_id=accounts[rr], ae_title="ELM1"))
    staff = await world.api.as_role("practice_staff", practice_id=pid)
    r = await staff.post("/api/switch-requests", json=body("read-right", "scan-co"))
    away = await r.json()
    assert away["state"] == "completed", away  # no case ever: at once
    if path != "at-once":  # a recent case with ScanCo means ScanCo is asked
        await add_case(world.hub, pid, away["new_account_id"], sc, T0 - timedelta(days=1))
    r = await staff.post("/api/switch-requests", json=body("scan-co", "read-right"))
    assert r.status == 201, await r.text()
    back = await r.json()
    if path == "approval":
        await world.run_jobs()
        where, fields = link(world, "desk@scanco.example", "approve")
        assert (await world.api.post(where, data=fields)).status == 200
    elif path == "deadline":
        world.clock.advance(hours=72)
        await world.run_jobs()
    async with world.hub.sessionmaker() as s:
        assert (await s.get(SwitchRequest, back["id"])).state == "completed"
        rows = (await s.execute(select(Account).where(Account.practice_id == pid).order_by(Account.id))).scalars()
        states = [(a.company_id, a.status, a.approved_for_access) for a in rows]
        changes = (await s.execute(select(AccountHistory.change).where(
            AccountHistory.account_id == accounts[rr]).order_by(AccountHistory.id))).scalars().all()
    assert states == [(rr, "active", True), (sc, "switched", False)]
    assert changes == ["switched_out", "switched_in"]  # the same row, its history kept
    fresh = await world.api.as_role("practice_staff", practice_id=pid)  # not access_suspended
    assert (await fresh.get("/api/whoami")).status == 200
    assert (await staff.get(f"/api/switch-requests/{back['id']}")).status == 200


async def test_a_request_keeps_the_window_it_was_notified_under(world_factory) -> None:
    world = await world_factory(switching={"response_hours": 24})
    rr = world.companies["read-right"]
    pid, accounts = await add_practice(world.hub, "elm-vets", {rr: ["DX"]})
    await add_case(world.hub, pid, accounts[rr], rr, T0 - timedelta(days=3))
    staff = await world.api.as_role("practice_staff", practice_id=pid)
    sr = await (await staff.post("/api/switch-requests", json=body("read-right", "scan-co"))).json()
    assert sr["state"] == "awaiting_response"
    await world.hub.stop()
    # the operator lengthens the window later: this request still closes after 24 hours
    later = await world_factory(clock=world.clock, switching={"response_hours": 96})
    later.clock.advance(hours=24)
    await later.run_jobs()
    async with later.hub.sessionmaker() as s:
        done = await s.get(SwitchRequest, sr["id"])
    assert (done.state, done.outcome) == ("completed", "switch_without_permission")
