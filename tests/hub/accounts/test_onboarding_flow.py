"""Onboarding from the request to the first case: missing-information loop, acknowledgement,
acceptance, welcome email with a single-use link, images over DICOM, first case. Every email
is caught by a real SMTP server (aiosmtpd) with the company in Cc."""

from __future__ import annotations

import asyncio
import re

from sqlalchemy import select

from hub.accounts.models import AccountRequest
from hub.imaging.models import Study
from hub.testing.dicom import send_files, write_synthetic_series
from hub.testing.fixtures_dicom import dicom_port

from .accounts_world import READ_RIGHT, World

PARTIAL = {
    "company": "read-right",
    "practice_name": "Elm Street Vets",
    "contact_name": "Dr Ada Brown",
    "email": "ada@elm.example",
    "address": {"line1": "1 Elm St", "city": "Leeds", "country": "GB"},
    "imaging_software": "Vet-Rocket",
    "modalities": ["DX"],
}


def body_of(msg) -> str:
    part = msg.get_body(preferencelist=("plain",))
    return part.get_content() if part is not None else msg.get_content()


async def test_request_to_first_case(world: World, tmp_path) -> None:
    api, hub = world.api, world.hub

    # 1. incomplete request: saved, "information requested", email lists exactly what is missing
    r = await api.post("/api/account-requests", json=PARTIAL)
    assert r.status == 201, await r.text()
    created = await r.json()
    assert created["state"] == "information_requested"
    assert created["missing_fields"] == ["phone", "address.postcode", "pims"]
    assert created["stages"]["information_requested"] is not None
    rid, token = created["id"], created["completion_token"]
    await world.run_jobs()
    [info] = world.mails("ada@elm.example")
    assert READ_RIGHT in str(info["Cc"])
    text = body_of(info)
    for label in ("Phone number", "Address (postcode)", "Practice-management system (PIMS)"):
        assert label in text
    assert "Modalities" not in text and "Practice name" not in text
    assert f"/account-requests/{rid}/complete?token={token}" in text

    # 2. completing only part of it asks again; a wrong token is refused
    r = await api.post(f"/api/account-requests/{rid}/complete", json={"token": "nope", "phone": "1"})
    assert r.status == 404
    r = await api.post(f"/api/account-requests/{rid}/complete",
                       json={"token": token, "phone": "+44 113 496 0000"})
    assert (await r.json())["missing_fields"] == ["address.postcode", "pims"]
    await world.run_jobs()
    assert len(world.mails("ada@elm.example")) == 2

    # 3. complete: acknowledged at once
    world.clock.advance(hours=2)
    r = await api.post(f"/api/account-requests/{rid}/complete",
                       json={"token": token, "pims": "ezyVet",
                             "address": {**PARTIAL["address"], "postcode": "LS1 1AA"}})
    done = await r.json()
    assert done["state"] == "awaiting_approval" and done["missing_fields"] == []
    await world.run_jobs()
    ack = world.mails("ada@elm.example")[-1]
    assert "We received your account request" in str(ack["Subject"])
    assert READ_RIGHT in str(ack["Cc"])

    # 4. the company accepts: practice, account, calling AE, welcome email
    world.clock.advance(days=1)
    company = await world.as_company("read-right")
    r = await company.post(f"/api/account-requests/{rid}/accept")
    assert r.status == 200, await r.text()
    accepted = await r.json()
    assert accepted["state"] == "accepted" and accepted["account_id"]
    await world.run_jobs()
    welcome = world.mails("ada@elm.example")[-1]
    assert READ_RIGHT in str(welcome["Cc"])
    text = body_of(welcome)
    assert "dicom.vethub.example" in text and "11112" in text and "VETHUB" in text
    calling_ae = re.search(r"Calling AE:\s+(\S+)", text).group(1)
    link = re.search(r"/set-password\?token=(\S+)", text).group(1)
    assert "Submit a case" in text

    # 5. the link sets a password once
    r = await api.post("/api/password", json={"token": link, "password": "correct horse battery"})
    assert r.status == 200, await r.text()
    r = await api.post("/api/password", json={"token": link, "password": "another password!"})
    assert r.status == 410 and (await r.json())["error"]["code"] == "link_used"
    r = await api.post("/api/login", json={"email": "ada@elm.example", "password": "correct horse battery"})
    assert r.status == 200
    staff_token = (await r.json())["token"]

    # 6. images arrive over DICOM with the assigned calling AE
    world.clock.advance(days=1)
    paths = write_synthetic_series(tmp_path / "series", 2, modality="DX")
    results = await asyncio.to_thread(send_files, "127.0.0.1", dicom_port(hub), paths,
                                      called_ae="VETHUB", calling_ae=calling_ae)
    assert all(res.status == 0 for res in results), results
    async with hub.sessionmaker() as s:
        study = (await s.execute(select(Study))).scalar_one()
        stamped = (await s.get(AccountRequest, rid)).first_images_received_at
    assert stamped == world.clock.now()  # by vethub_instance_stored, as the images arrived

    # 7. the practice submits the case (a login token lasts login_token_hours: log in again)
    r = await api.post("/api/login", json={"email": "ada@elm.example", "password": "correct horse battery"})
    staff_token = (await r.json())["token"]
    world.clock.advance(hours=3)
    r = await api.post("/api/cases", json={"study_id": study.id, "question": "fracture?", "allow_incomplete": True},
                       headers={"Authorization": f"Bearer {staff_token}"})
    assert r.status == 201, await r.text()

    # 8. every stage is stamped, in order
    r = await company.get("/api/reports/onboarding?format=json")
    [row] = (await r.json())["items"]
    stages = row["stages"]
    order = ["requested", "information_requested", "account_created", "welcome_sent",
             "password_set", "first_images_received", "first_case_submitted"]
    assert all(stages[s] for s in order), stages
    assert [stages[s] for s in order] == sorted(stages[s] for s in order)
    assert row["state"] == "first_case_submitted"
    assert row["days_between"]["first_case_submitted"] == 0.1  # 3 hours


async def test_complete_request_is_acknowledged_and_auto_approved(world_factory) -> None:
    world = await world_factory(companies=[
        {"slug": "read-right", "name": "ReadRight", "email": READ_RIGHT, "modalities": ["DX"],
         "auto_approve": True},
    ])
    full = {**PARTIAL, "phone": "+441134960000", "pims": "ezyVet",
            "address": {**PARTIAL["address"], "postcode": "LS1 1AA"}}
    r = await world.api.post("/api/account-requests", json=full)
    body = await r.json()
    assert body["state"] == "accepted", body
    await world.run_jobs()
    subjects = [str(m["Subject"]) for m in world.mails("ada@elm.example")]
    assert len(subjects) == 2
    assert "We received" in subjects[0] and "Welcome" in subjects[1]
    assert all(READ_RIGHT in str(m["Cc"]) for m in world.mails("ada@elm.example"))


async def test_company_requires_more_fields(world_factory) -> None:
    world = await world_factory()
    async with world.hub.transaction() as s:
        from hub.db.models import Company

        c = await s.get(Company, world.companies["read-right"])
        c.settings = {**c.settings, "onboarding_required_fields": ["vat_number"]}
    full = {**PARTIAL, "phone": "+441134960000", "pims": "ezyVet",
            "address": {**PARTIAL["address"], "postcode": "LS1 1AA"}}
    r = await world.api.post("/api/account-requests", json=full)
    body = await r.json()
    assert body["missing_fields"] == ["vat_number"]
    r = await world.api.post(f"/api/account-requests/{body['id']}/complete",
                             json={"token": body["completion_token"], "extra": {"vat_number": "GB1"}})
    assert (await r.json())["state"] == "awaiting_approval"


async def test_password_link_expires(world_factory) -> None:
    world = await world_factory(companies=[
        {"slug": "read-right", "name": "ReadRight", "email": READ_RIGHT, "modalities": ["DX"],
         "auto_approve": True},
    ])
    full = {**PARTIAL, "phone": "+441134960000", "pims": "ezyVet",
            "address": {**PARTIAL["address"], "postcode": "LS1 1AA"}}
    await world.api.post("/api/account-requests", json=full)
    await world.run_jobs()
    link = re.search(r"/set-password\?token=(\S+)", body_of(world.mails()[-1])).group(1)
    world.clock.advance(hours=72)
    r = await world.api.post("/api/password", json={"token": link, "password": "correct horse battery"})
    assert r.status == 410 and (await r.json())["error"]["code"] == "link_expired"


async def test_invalid_values_are_refused_with_the_field(world: World) -> None:
    r = await world.api.post("/api/account-requests", json={**PARTIAL, "email": "not-an-email"})
    assert r.status == 422
    assert (await r.json())["error"]["field"] == "email"
    r = await world.api.post("/api/account-requests", json={**PARTIAL, "company": "nobody"})
    assert (await r.json())["error"]["field"] == "company"


async def test_public_post_is_rate_limited(world: World) -> None:
    for _ in range(5):
        r = await world.api.post("/api/account-requests", json={"practice_name": "x"})
        assert r.status == 201
    r = await world.api.post("/api/account-requests", json={"practice_name": "x"})
    assert r.status == 429 and int(r.headers["Retry-After"]) >= 1


async def test_html_form_round_trip(world: World) -> None:
    r = await world.api.get("/account-request")
    html = await r.text()
    assert r.status == 200 and 'name="practice_name"' in html and "ReadRight" in html
    form = {"company": "read-right", "practice_name": "Oak Vets", "email": "oak@oak.example",
            "address.line1": "2 Oak Rd"}
    r = await world.api.post("/account-request", data=form)
    html = await r.text()
    assert r.status == 200 and "We still need" in html and "Phone number" in html
    async with world.hub.sessionmaker() as s:
        req = (await s.execute(select(AccountRequest))).scalar_one()
    assert req.address == {"line1": "2 Oak Rd"} and req.state == "information_requested"


async def test_request_not_visible_to_other_company(world: World) -> None:
    r = await world.api.post("/api/account-requests", json=PARTIAL)
    rid = (await r.json())["id"]
    other = await world.as_company("scan-co")
    assert (await other.get(f"/api/account-requests/{rid}")).status == 404
    assert (await other.post(f"/api/account-requests/{rid}/accept")).status == 404
    assert (await (await other.get("/api/account-requests")).json())["items"] == []


async def test_html_complete_and_set_password_pages(world_factory) -> None:
    world = await world_factory(companies=[
        {"slug": "read-right", "name": "ReadRight", "email": READ_RIGHT, "modalities": ["DX"],
         "auto_approve": True},
    ])
    r = await world.api.post("/api/account-requests", json={**PARTIAL, "phone": "+441134960000"})
    body = await r.json()
    rid, token = body["id"], body["completion_token"]
    # the emailed link opens a form asking only for what is missing
    r = await world.api.get(f"/account-requests/{rid}/complete?token={token}")
    html = await r.text()
    assert r.status == 200 and 'name="pims"' in html and 'name="address.postcode"' in html
    assert 'name="practice_name"' not in html
    assert (await world.api.get(f"/account-requests/{rid}/complete?token=wrong")).status == 404
    r = await world.api.post(f"/account-requests/{rid}/complete",
                             data={"token": token, "pims": "ezyVet", "address.postcode": "LS1 1AA"})
    assert r.status == 200 and "Your account is ready" in await r.text()
    async with world.hub.sessionmaker() as s:
        req = await s.get(AccountRequest, rid)
    assert req.state == "accepted" and req.address["city"] == "Leeds" and req.address["postcode"] == "LS1 1AA"
    # the welcome link's page sets the password once
    await world.run_jobs()
    link = re.search(r"/set-password\?token=(\S+)", body_of(world.mails()[-1])).group(1)
    r = await world.api.get(f"/set-password?token={link}")
    assert r.status == 200 and 'type="password"' in await r.text()
    r = await world.api.post("/set-password", data={"token": link, "password": "short"})
    assert r.status == 422
    r = await world.api.post("/set-password", data={"token": link, "password": "correct horse battery"})
    assert r.status == 200 and "Password set" in await r.text()
    r = await world.api.post("/set-password", data={"token": link, "password": "correct horse battery"})
    assert r.status == 410


async def test_html_form_shares_the_rate_limit(world: World) -> None:
    for _ in range(3):
        assert (await world.api.post("/api/account-requests", json={"practice_name": "x"})).status == 201
    for _ in range(2):
        assert (await world.api.post("/account-request", data={"practice_name": "x"})).status == 200
    r = await world.api.post("/account-request", data={"practice_name": "x"})
    assert r.status == 429 and "Too many" in await r.text()


async def test_known_practice_adds_a_company_through_onboarding(world_factory) -> None:
    world = await world_factory(companies=[
        {"slug": "read-right", "name": "ReadRight", "email": READ_RIGHT, "modalities": ["DX"],
         "auto_approve": True},
        {"slug": "scan-co", "name": "ScanCo", "email": "desk@scanco.example", "modalities": ["US"],
         "auto_approve": True},
    ])
    full = {**PARTIAL, "phone": "+441134960000", "pims": "ezyVet",
            "address": {**PARTIAL["address"], "postcode": "LS1 1AA"}}
    first = await (await world.api.post("/api/account-requests", json=full)).json()
    await world.run_jobs()
    link = re.search(r"/set-password\?token=(\S+)", body_of(world.mails()[-1])).group(1)
    await world.api.post("/api/password", json={"token": link, "password": "correct horse battery"})

    second = await (await world.api.post("/api/account-requests",
                                         json={**full, "company": "scan-co", "modalities": ["US"]})).json()
    # a known practice: auto-approval only asks the practice, whose own staff confirm
    assert second["state"] == "awaiting_practice" and second["account_id"] is None
    login = await (await world.api.post("/api/login", json={"email": full["email"],
                                                            "password": "correct horse battery"})).json()
    r = await world.api.post(f"/api/account-requests/{second['id']}/confirm",
                             headers={"Authorization": f"Bearer {login['token']}"})
    second = await r.json()
    assert second["state"] == "accepted"
    assert second["practice_id"] == first["practice_id"] and second["account_id"] != first["account_id"]
    await world.run_jobs()
    welcome = world.mails()[-1]
    assert "desk@scanco.example" in str(welcome["Cc"])
    text = body_of(welcome)
    assert "set-password" not in text and "password you already have" in text
    # a third request to a company it already has is refused at acceptance
    third = await (await world.api.post("/api/account-requests", json=full)).json()
    assert third["state"] == "awaiting_approval"  # auto-approval refused: left to an operator
    op = await world.as_operator()
    events = (await (await op.get("/api/events", params={"kind": "account_request.needs_operator"})).json())["items"]
    assert len(events) == 1 and "already has an account" in events[0]["message"]
    r = await op.post(f"/api/account-requests/{third['id']}/accept")
    assert r.status == 409 and (await r.json())["error"]["code"] == "account_exists"


async def test_an_email_of_another_kind_of_user_is_refused(world: World) -> None:
    async with world.hub.transaction() as s:
        from hub.db.models import User

        s.add(User(email="ada@elm.example", name="Ada", role="operator"))
    full = {**PARTIAL, "phone": "+441134960000", "pims": "ezyVet",
            "address": {**PARTIAL["address"], "postcode": "LS1 1AA"}}
    body = await (await world.api.post("/api/account-requests", json=full)).json()
    op = await world.as_operator()
    r = await op.post(f"/api/account-requests/{body['id']}/accept")
    assert r.status == 409 and (await r.json())["error"]["field"] == "email"
