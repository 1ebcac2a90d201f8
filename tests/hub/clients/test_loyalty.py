"""The loyalty program: off unless enabled, an append-only ledger whose sum is the balance,
never negative, also under 50 concurrent redemptions."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from hub.clients.loyalty import ledger_balance
from hub.clients.models import LoyaltyAccount, LoyaltyEntry
from hub.db.models import AuditEntry
from hub.pims.models import Client

LOYALTY = {"clients": {"practices": {"oak": {"loyalty": True}},
                       "rewards": {"nail trim": 50, "free exam": 200}}}


async def active_client(world) -> int:
    async with world.hub.sessionmaker() as s:
        return (await s.execute(select(Client.id).where(
            Client.practice_id == world.practice_id, Client.status == "active")
            .order_by(Client.id).limit(1))).scalar_one()


async def test_enroll_adjust_redeem(world_factory, api_of_factory) -> None:
    world = await world_factory(100, extra=LOYALTY)
    api_of = await api_of_factory(world)
    staff = await api_of("practice_staff", practice_id=world.practice_id, name="desk")
    cid = await active_client(world)
    assert (await staff.get(f"/api/clients/{cid}/loyalty")).status == 404  # not enrolled
    resp = await staff.post(f"/api/clients/{cid}/loyalty")
    assert resp.status == 201 and (await resp.json())["balance"] == 0
    assert (await staff.post(f"/api/clients/{cid}/loyalty")).status == 409
    resp = await staff.post(f"/api/clients/{cid}/loyalty/adjustments",
                            json={"coins": 120, "reason": "welcome bonus"})
    assert resp.status == 201 and (await resp.json())["balance"] == 120
    for bad in ({"coins": 0, "reason": "x"}, {"coins": 5, "reason": " "}, {"coins": 5}):
        assert (await staff.post(f"/api/clients/{cid}/loyalty/adjustments",
                                 json=bad)).status == 422
    short = await staff.post(f"/api/clients/{cid}/loyalty/redemptions", json={"reward": "free exam"})
    assert short.status == 409 and (await short.json())["error"]["code"] == "insufficient_coins"
    took = await staff.post(f"/api/clients/{cid}/loyalty/adjustments",
                            json={"coins": -500, "reason": "typo"})
    assert took.status == 409
    resp = await staff.post(f"/api/clients/{cid}/loyalty/redemptions", json={"reward": "nail trim"})
    body = await resp.json()
    assert resp.status == 201 and body["balance"] == 70
    assert [(e["kind"], e["coins"]) for e in body["entries"]] == [
        ("redeem", -50), ("adjust", 120), ("enroll", 0)]
    assert body["entries"][0]["actor"] == "practice_staff:desk"
    assert (await staff.post(f"/api/clients/{cid}/loyalty/redemptions",
                             json={"reward": "spa day"})).status == 422
    async with world.hub.sessionmaker() as s:
        audits = (await s.execute(select(AuditEntry.action).where(
            AuditEntry.entity_id == str(cid)))).scalars().all()
    assert {"loyalty.enroll", "loyalty.adjust", "loyalty.redeem"} <= set(audits)


async def test_off_unless_enabled_and_scoped(world_factory, api_of_factory) -> None:
    world = await world_factory(50)
    api_of = await api_of_factory(world)
    staff = await api_of("practice_staff", practice_id=world.practice_id)
    cid = await active_client(world)
    resp = await staff.post(f"/api/clients/{cid}/loyalty")
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "loyalty_disabled"
    for who in (await api_of("practice_staff", practice_id=world.other_id),
                await api_of("company_admin", company_id=world.company_id)):
        for method, path, body in (
                ("get", "loyalty", None), ("post", "loyalty", None),
                ("post", "loyalty/adjustments", {"coins": 5, "reason": "x"}),
                ("post", "loyalty/redemptions", {"reward": "nail trim"})):
            resp = await getattr(who, method)(f"/api/clients/{cid}/{path}", json=body)
            assert resp.status == 404, (method, path)
    async with world.hub.sessionmaker() as s:
        assert (await s.execute(select(LoyaltyEntry))).first() is None


async def test_fifty_concurrent_redemptions_ten_succeed(world_factory, api_of_factory) -> None:
    world = await world_factory(50, extra=LOYALTY)
    api_of = await api_of_factory(world)
    staff = await api_of("practice_staff", practice_id=world.practice_id)
    cid = await active_client(world)
    assert (await staff.post(f"/api/clients/{cid}/loyalty")).status == 201
    assert (await staff.post(f"/api/clients/{cid}/loyalty/adjustments",
                             json={"coins": 500, "reason": "covers ten"})).status == 201

    async def redeem() -> int:
        resp = await staff.post(f"/api/clients/{cid}/loyalty/redemptions",
                                json={"reward": "nail trim"})
        return resp.status

    statuses = await asyncio.gather(*(redeem() for _ in range(50)))
    assert statuses.count(201) == 10 and statuses.count(409) == 40
    async with world.hub.sessionmaker() as s:
        account = (await s.execute(select(LoyaltyAccount).where(
            LoyaltyAccount.client_id == cid))).scalar_one()
        assert account.balance == 0 == await ledger_balance(s, cid)
        redeemed = (await s.execute(select(LoyaltyEntry).where(
            LoyaltyEntry.client_id == cid, LoyaltyEntry.kind == "redeem"))).scalars().all()
    assert len(redeemed) == 10
    assert sorted(e.detail["balance_after"] for e in redeemed) == list(range(0, 500, 50))
