"""The ezyVet connector against the fake ezyVet server, through the sync engine."""

from __future__ import annotations

import json

from sqlalchemy import func, select

from hub.pims.models import (
    Appointment,
    Client,
    Patient,
    Reminder,
    SyncCheckpoint,
    SyncReject,
    Visit,
)
from hub.pims.sync import sync_practices
from hub.testing.fake_ezyvet import DETAIL_EMAIL, FakeEzyVet


def populate(fake: FakeEzyVet, n: int = 12) -> list[dict]:
    contacts = []
    for i in range(n):
        c = fake.add_contact(
            f"First{i}", f"Last{i}", email=f"owner{i}@example.com",
            phone_mobile=f"(415) 555-{1000 + i:04d}",
            address={"street_1": f"  {i} Oak St ", "city": "Springfield", "state": "IL",
                     "post_code": "62701"},
        )
        contacts.append(c)
        a = fake.add_animal(c["id"], f"Pet{i}", species="Canine", breed="Beagle", sex="Female",
                            date_of_birth=1_500_000_000 + i * 86400)
        fake.add_appointment(a["id"], c["id"], 1_800_000_000 + i * 3600, type_name="Vaccination")
        fake.add_consult(a["id"], 1_700_000_000 + i * 3600, reason="Limping")
    return contacts


async def count(hub, model) -> int:
    async with hub.sessionmaker() as s:
        return (await s.execute(select(func.count()).select_from(model))).scalar_one()


async def test_full_then_incremental(hub_factory, pims_practice, fake_ezyvet, ezyvet_entry) -> None:
    contacts = populate(fake_ezyvet)
    fake_ezyvet.inject_malformed("contact")
    # The sync re-reads the second its scan started in (nothing changed then is missed); let
    # that second be after the data was written so the incremental run sees only the changes.
    fake_ezyvet.advance(60)
    hub = await hub_factory({"practices": [pims_practice([ezyvet_entry(fake_ezyvet, page_size=5)])]})

    [run] = await sync_practices(hub, practice="oak")
    assert run.status == "succeeded", run.error
    assert run.counts["client"] == {"inserted": 12, "updated": 0, "unchanged": 0, "rejected": 1}
    for kind in ("patient", "appointment", "visit"):
        assert run.counts[kind]["inserted"] == 12, kind
    assert (await count(hub, Visit), await count(hub, Appointment)) == (12, 12)
    # reminders are opt-in: no public ezyVet list names a reminder endpoint
    assert await count(hub, Reminder) == 0 and not fake_ezyvet.api_calls("/v1/reminder")
    async with hub.sessionmaker() as s:
        c3 = (await s.execute(select(Client).where(Client.external_id == str(contacts[3]["id"])))).scalar_one()
        [reject] = (await s.execute(select(SyncReject))).scalars().all()
        pet = (await s.execute(select(Patient).where(Patient.name == "Pet3"))).scalar_one()
    assert c3.email == "owner3@example.com" and c3.phone_mobile == "+14155551003"
    assert c3.address_line1 == "3 Oak St" and c3.status == "active"
    # not ezyVet v1 contact fields: unknown, never invented
    assert (c3.comms_disabled, c3.balance, c3.client_class) == (None, None, None)
    assert (pet.species, pet.breed, pet.sex, pet.client_external_id) == ("Canine", "Beagle", "Female", c3.external_id)
    assert reject.kind == "client" and "id" in reject.reason and reject.raw["first_name"] == ["not", "a", "name"]
    # Lookups and details are fetched per page, not per record (plus one scan of changed
    # details since the contact scan began, which finds none).
    assert len(fake_ezyvet.api_calls("/v1/contactdetail")) == 4

    # Changes in ezyVet: a new email (the contact's modified_at does not move), an inactivated
    # client, a deceased pet, a new client.
    fake_ezyvet.advance(60)
    fake_ezyvet.set_detail(contacts[0]["id"], DETAIL_EMAIL, "new0@example.com")
    fake_ezyvet.update("contact", contacts[1]["id"], active=0)
    dead = fake_ezyvet.update("animal", pet_id := next(iter(
        a["id"] for a in fake_ezyvet.tables["animal"].values() if a["name"] == "Pet2")), is_dead=1)
    populate_one = fake_ezyvet.add_contact("New", "Owner", email="new@example.com")
    fake_ezyvet.requests.clear()

    [run2] = await sync_practices(hub, practice="oak")
    assert run2.status == "succeeded", run2.error
    # c0 through its changed detail, c1 through the contact scan; the new client is read by
    # the contact scan and again through its new details (unchanged the second time).
    assert run2.counts["client"] == {"inserted": 1, "updated": 2, "unchanged": 1, "rejected": 0}
    assert run2.counts["patient"] == {"inserted": 0, "updated": 1, "unchanged": 0, "rejected": 0}
    # the contact scan is incremental; the other contact reads fetch owners of changed details
    scans = [q for _m, _p, q in fake_ezyvet.api_calls("/v1/contact") if "id" not in q]
    assert scans and all(json.loads(q["modified_at"])["gt"] for q in scans)
    async with hub.sessionmaker() as s:
        c0 = (await s.execute(select(Client).where(Client.external_id == str(contacts[0]["id"])))).scalar_one()
        c1 = (await s.execute(select(Client).where(Client.external_id == str(contacts[1]["id"])))).scalar_one()
        p2 = (await s.execute(select(Patient).where(Patient.external_id == str(pet_id)))).scalar_one()
    assert c0.email == "new0@example.com"
    assert c1.status == "inactive"
    assert p2.status == "deceased" and dead["is_dead"] == 1
    assert await count(hub, Client) == 13 and populate_one["id"]


async def test_token_expiry_mid_run(hub_factory, pims_practice, fake_ezyvet, ezyvet_entry) -> None:
    populate(fake_ezyvet, 20)
    fake_ezyvet.expire_tokens_after(4)
    hub = await hub_factory({"practices": [pims_practice([ezyvet_entry(fake_ezyvet, page_size=3)])]})
    [run] = await sync_practices(hub, practice="oak")
    assert run.status == "succeeded", run.error
    assert fake_ezyvet.token_requests == 2  # the first, and one renewal after the 401
    assert await count(hub, Client) == 20 and await count(hub, Patient) == 20


async def test_429_storm_and_5xx_are_retried(hub_factory, pims_practice, fake_ezyvet, ezyvet_entry) -> None:
    populate(fake_ezyvet, 6)
    fake_ezyvet.throttle(5, retry_after=0)
    fake_ezyvet.fail_next(2, 503)  # 7 failures in a row: the 8th try of the first call works
    hub = await hub_factory({"practices": [pims_practice([ezyvet_entry(fake_ezyvet)])]})
    [run] = await sync_practices(hub, practice="oak")
    assert run.status == "succeeded", run.error
    assert await count(hub, Client) == 6
    # the site's lookups are read first; its first call got through on the 8th try
    assert fake_ezyvet.requests[0][1] == fake_ezyvet.requests[7][1] == "/v1/contactdetailtype"


async def test_storm_longer_than_retries_fails_then_resumes(
    hub_factory, pims_practice, fake_ezyvet, ezyvet_entry,
) -> None:
    populate(fake_ezyvet, 9)
    hub = await hub_factory({"practices": [pims_practice(
        [ezyvet_entry(fake_ezyvet, page_size=3, max_attempts=3)])]})
    # The two lookups, two pages of contacts (each with its details and addresses), then a
    # storm that outlasts the three tries of the third page.
    fake_ezyvet.throttle(3, retry_after=0, after=8)
    [run] = await sync_practices(hub, practice="oak")
    assert run.status == "failed" and "429" in run.error
    assert await count(hub, Client) == 6
    async with hub.sessionmaker() as s:
        cp = (await s.execute(select(SyncCheckpoint.checkpoint))).scalar_one()
    assert cp["contact"]["page"] == 3
    fake_ezyvet.requests.clear()
    [run2] = await sync_practices(hub, practice="oak")
    assert run2.status == "succeeded", run2.error
    assert await count(hub, Client) == 9
    first = fake_ezyvet.api_calls("/v1/contact")[0][2]
    assert first["page"] == "3" and "modified_at" not in first


async def test_token_reused_by_the_next_run(hub_factory, pims_practice, fake_ezyvet, ezyvet_entry) -> None:
    populate(fake_ezyvet, 2)
    hub = await hub_factory({"practices": [pims_practice([ezyvet_entry(fake_ezyvet)])]})
    for _ in range(3):
        [run] = await sync_practices(hub, practice="oak")
        assert run.status == "succeeded", run.error
    assert fake_ezyvet.token_requests == 1
