"""Client details, communication preferences and alerts, on a practice synced from the export."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select

from hub.db.models import AuditEntry
from hub.messaging import service
from hub.messaging.models import ConsentRecord
from hub.messaging.outbound import queue_communication
from hub.pims.models import Client
from hub.testing.exports import CLIENT_COLUMNS, PATIENT_COLUMNS

from .conftest import World

COL = {name: i for i, name in enumerate(CLIENT_COLUMNS)}
PCOL = {name: i for i, name in enumerate(PATIENT_COLUMNS)}


async def client_id(world: World, external_id: str) -> int:
    async with world.hub.sessionmaker() as s:
        return (await s.execute(select(Client.id).where(
            Client.practice_id == world.practice_id, Client.external_id == external_id))).scalar_one()


def pick(world: World, **want: str) -> list[str]:
    return next(r for r in world.data.clients
                if all((r[COL[k]] == v) if v != "*" else bool(r[COL[k]]) for k, v in want.items()))


async def test_details_show_what_the_pims_sent(world: World, api_of) -> None:
    staff = await api_of("practice_staff", practice_id=world.practice_id)
    row = pick(world, email="*", pet_app_status="active", email_status="valid")
    cid = await client_id(world, row[COL["client_id"]])
    resp = await staff.get(f"/api/clients/{cid}")
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    summary, contact = body["summary"], body["contact"]
    assert summary["pims_id"] == row[COL["client_id"]]
    assert summary["status"] == row[COL["status"]]
    assert summary["primary_practice"]["slug"] == "oak"
    assert Decimal(summary["balance_due"]) == Decimal(row[COL["balance"]])
    assert summary["client_class"] == row[COL["client_class"]]
    assert summary["comms_disabled"] is (row[COL["comms_disabled"]] == "yes")
    assert summary["pet_app"] == "active"
    assert summary["last_survey"] is None
    assert contact["email"] == row[COL["email"]] and contact["email_status"] == "valid"
    assert (contact["phones"]["mobile"] is None) == (not row[COL["phone_mobile"]])
    [address] = contact["mailing_addresses"]
    assert address["line1"] == row[COL["address_line1"]].strip()
    assert address["postcode"] == row[COL["postcode"]]
    pets = [p for p in world.data.patients if p[PCOL["client_id"]] == row[COL["client_id"]]]
    assert {(p["pims_id"], p["species"], p["breed"], p["status"]) for p in body["patients"]} == {
        (p[PCOL["patient_id"]], p[PCOL["species"]], p[PCOL["breed"]], p[PCOL["status"]])
        for p in pets}


async def test_email_status_from_pims_and_from_the_hubs_bounces(world: World, api_of) -> None:
    staff = await api_of("practice_staff", practice_id=world.practice_id)
    for status in ("invalid", "bounced", "unverified"):
        row = pick(world, email_status=status)
        cid = await client_id(world, row[COL["client_id"]])
        body = await (await staff.get(f"/api/clients/{cid}")).json()
        assert body["contact"]["email_status"] == status
    row = pick(world, email_status="valid")
    async with world.hub.transaction() as s:
        await service.mark_address_invalid(s, world.hub, kind="email", address=row[COL["email"]],
                                           reason="550 no such user", source="bounce")
    cid = await client_id(world, row[COL["client_id"]])
    body = await (await staff.get(f"/api/clients/{cid}")).json()
    assert body["contact"]["email_status"] == "bounced"


async def test_preferences_go_to_the_consent_ledger(world: World, api_of) -> None:
    staff = await api_of("practice_staff", practice_id=world.practice_id, name="desk")
    owners = {p[PCOL["client_id"]] for p in world.data.patients if p[PCOL["status"]] == "active"}
    row = next(r for r in world.data.clients if r[COL["status"]] == "active"
               and r[COL["comms_disabled"]] == "no" and r[COL["email"]]
               and r[COL["client_id"]] in owners)
    cid = await client_id(world, row[COL["client_id"]])
    body = await (await staff.get(f"/api/clients/{cid}/preferences")).json()
    assert len(body["items"]) == 15 and {i["allowed"] for i in body["items"]} == {None}
    resp = await staff.put(f"/api/clients/{cid}/preferences", json={
        "items": [{"category": "survey", "channel": "email", "allowed": False},
                  {"category": "marketing", "channel": "sms", "allowed": True}],
        "note": "asked at the desk"})
    assert resp.status == 200, await resp.text()
    items = {(i["category"], i["channel"]): i for i in (await resp.json())["items"]}
    assert items["survey", "email"]["allowed"] is False
    assert items["survey", "email"]["source"] == "staff"
    assert items["marketing", "sms"]["allowed"] is True
    assert items["reminder", "email"]["allowed"] is None
    async with world.hub.transaction() as s:
        rows = (await s.execute(select(ConsentRecord).where(ConsentRecord.client_id == cid))).scalars().all()
        assert {(r.category, r.channel, r.allowed, r.source) for r in rows} == {
            ("survey", "email", False, "staff"), ("marketing", "sms", True, "staff")}
        assert all(r.actor == "practice_staff:desk" and r.detail == "asked at the desk" for r in rows)
        [entry] = (await s.execute(select(AuditEntry).where(
            AuditEntry.action == "client.preferences"))).scalars().all()
        assert entry.entity_id == str(cid) and entry.after == {"survey/email": False,
                                                               "marketing/sms": True}
        # the contact verdict reads the same ledger
        comm = await queue_communication(s, world.hub, client_id=cid, template="reminder",
                                         category="survey", channels=["email"],
                                         context={"patient_name": "Rex", "service": "x",
                                                  "due_date": "2026-03-09"})
        assert comm.status == "suppressed"
        assert comm.verdict_reasons[0]["code"] == "preference_opt_out"
    # the same change again writes nothing more
    await staff.put(f"/api/clients/{cid}/preferences", json={
        "items": [{"category": "survey", "channel": "email", "allowed": False}]})
    async with world.hub.sessionmaker() as s:
        assert len((await s.execute(select(ConsentRecord).where(
            ConsentRecord.client_id == cid))).scalars().all()) == 2


async def test_preferences_refuse_bad_input_and_other_tenants(world: World, api_of) -> None:
    row = world.data.clients[0]
    cid = await client_id(world, row[COL["client_id"]])
    staff = await api_of("practice_staff", practice_id=world.practice_id)
    other = await api_of("practice_staff", practice_id=world.other_id)
    admin = await api_of("company_admin", company_id=world.company_id)
    change = {"items": [{"category": "marketing", "channel": "email", "allowed": False}]}
    for bad in ({"items": [{"category": "account", "channel": "email", "allowed": False}]},
                {"items": []}, {"items": change["items"], "extra": 1}):
        assert (await staff.put(f"/api/clients/{cid}/preferences", json=bad)).status == 422
    for who in (other, admin):
        assert (await who.get(f"/api/clients/{cid}/preferences")).status == 404
        assert (await who.put(f"/api/clients/{cid}/preferences", json=change)).status == 404
        assert (await who.get(f"/api/clients/{cid}/alerts")).status == 404
        assert (await who.put(f"/api/clients/{cid}/alerts/settings", json={})).status == 404
    async with world.hub.sessionmaker() as s:
        assert (await s.execute(select(ConsentRecord))).first() is None


async def test_alerts_and_their_settings(world: World, api_of) -> None:
    staff = await api_of("practice_staff", practice_id=world.practice_id)
    row = pick(world, phone_mobile="", email_status="bounced")
    cid = await client_id(world, row[COL["client_id"]])
    body = await (await staff.get(f"/api/clients/{cid}/alerts")).json()
    codes = {a["code"] for a in body["items"]}
    assert {"missing_mobile", "invalid_email"} <= codes
    assert "no_mailing_address" not in codes
    resp = await staff.put(f"/api/clients/{cid}/alerts/settings",
                           json={"disabled": ["missing_mobile"]})
    assert resp.status == 200
    codes = {a["code"] for a in (await resp.json())["items"]}
    assert "missing_mobile" not in codes and "invalid_email" in codes
    resp = await staff.put(f"/api/clients/{cid}/alerts/settings", json={"all_disabled": True})
    assert (await resp.json())["items"] == []
    assert (await staff.put(f"/api/clients/{cid}/alerts/settings",
                            json={"disabled": ["nonsense"]})).status == 422


async def test_overdue_reminder_alert_per_patient(world: World, api_of) -> None:
    staff = await api_of("practice_staff", practice_id=world.practice_id)
    today = world.clock.now().date()
    # a patient with an active reminder due before today (the export's dates start 2026-01-01)
    pets = {p[0]: p for p in world.data.patients if p[PCOL["status"]] == "active"}
    owners = {r[COL["client_id"]]: r for r in world.data.clients}
    reminder = next(r for r in world.data.reminders
                    if r[1] in pets and r[3] < today.isoformat()
                    and owners[pets[r[1]][1]][COL["status"]] == "active")
    cid = await client_id(world, pets[reminder[1]][1])
    body = await (await staff.get(f"/api/clients/{cid}/alerts")).json()
    overdue = [a for a in body["items"] if a["code"] == "overdue_reminder"]
    assert any(reminder[2] in a["message"] and a["patient_id"] for a in overdue)


async def test_no_recent_visit_alert(world: World, api_of) -> None:
    """A pet whose last visit the PIMS reports is over 18 months old."""
    from hub.pims.sync import sync_practices
    from hub.testing.exports import VISIT_COLUMNS, make_stable, write_csv

    seen = {v[1] for v in world.data.visits}
    pet = next(p for p in world.data.patients if p[PCOL["status"]] == "active"
               and p[0] not in seen)
    make_stable(write_csv(world.drop / "visits-old.csv", VISIT_COLUMNS, [
        ["V-old", pet[0], pet[1], "2024-01-10T10:00:00+00:00", "Consult",
         "2024-01-10T10:00:00+00:00"]]))
    [result] = await sync_practices(world.hub, practice="oak")
    assert result.counts["visit"]["inserted"] == 1
    staff = await api_of("practice_staff", practice_id=world.practice_id)
    cid = await client_id(world, pet[1])
    body = await (await staff.get(f"/api/clients/{cid}/alerts")).json()
    [old] = [a for a in body["items"] if a["code"] == "no_recent_visit"]
    assert "2024-01-10" in old["message"] and old["patient_id"]
    await staff.put(f"/api/clients/{cid}/alerts/settings", json={"disabled": ["no_recent_visit"]})
    body = await (await staff.get(f"/api/clients/{cid}/alerts")).json()
    assert all(a["code"] != "no_recent_visit" for a in body["items"])
