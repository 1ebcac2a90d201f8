"""The ezyVet connector against what ezyVet is known to do (docs/providers/ezyvet.md): optional
resources, per-site lookups, change detection through details and addresses, the token's
lifetime and scopes, and the communications flag ezyVet cannot supply."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from sqlalchemy import select

from connectors.ezyvet.client import (
    Credentials,
    EzyVetClient,
    NotAvailable,
    join_scopes,
    token_lifetime,
)
from hub.clock import FrozenClock
from hub.messaging.outbound import queue_communication
from hub.pims.models import Appointment, Client, Reminder, Visit
from hub.pims.sync import build_connector, connector_entries, sync_practices
from hub.testing.fake_ezyvet import (
    APPOINTMENT_STATUS_IDS,
    DETAIL_EMAIL,
    DETAIL_TYPE_IDS,
    FakeEzyVet,
)


def one_client(fake: FakeEzyVet, name: str = "Ann", **kw) -> dict:
    contact = fake.add_contact(name, "Smith", email=f"{name.lower()}@example.com",
                               phone_mobile="(415) 555-1000",
                               address={"street_1": "1 Oak St", "city": "Springfield",
                                        "state": "IL", "post_code": "62701"}, **kw)
    animal = fake.add_animal(contact["id"], "Rex")
    fake.add_appointment(animal["id"], contact["id"], 1_800_000_000,
                         status_id=APPOINTMENT_STATUS_IDS["Confirmed"])
    fake.add_consult(animal["id"], 1_700_000_000, reason="Limping")
    return contact


async def rows(hub, model) -> list:
    async with hub.sessionmaker() as s:
        return list((await s.execute(select(model))).scalars())


async def test_reminders_are_opt_in_and_a_missing_endpoint_is_a_warning(
    hub_factory, pims_practice, fake_ezyvet, ezyvet_entry, caplog,
) -> None:
    caplog.set_level(logging.WARNING, logger="connectors.ezyvet.connector")
    one_client(fake_ezyvet)
    # the site has no reminder endpoint (the fake's default, like every public list)
    hub = await hub_factory({"practices": [pims_practice(
        [ezyvet_entry(fake_ezyvet, reminders=True)])]})
    [run] = await sync_practices(hub, practice="oak")
    assert run.status == "succeeded", run.error
    assert [c[1] for c in fake_ezyvet.api_calls("/v1/reminder")] == ["/v1/reminder"]
    assert len(await rows(hub, Visit)) == 1 and len(await rows(hub, Appointment)) == 1
    assert "reminder" in caplog.text and "not offered by this site" in caplog.text
    [entry] = connector_entries(hub.config.practices, "oak")
    async with hub.sessionmaker() as s:
        from hub.db.models import Practice
        practice = (await s.execute(select(Practice))).scalar_one()
    health = await build_connector(hub, entry, practice).health()
    assert health.ok and "reminder (not offered by this site)" in health.detail
    # the token asked for the reminder scope only because reminders were turned on
    assert "read-reminder" in fake_ezyvet.token_bodies[0]["scope"].split(",")


async def test_reminders_when_the_site_offers_them(hub_factory, pims_practice,
                                                   ezyvet_entry) -> None:
    async with FakeEzyVet(reminders=True) as fake:
        contact = one_client(fake)
        animal = next(iter(fake.tables["animal"].values()))
        fake.add_reminder(animal["id"], "Rabies vaccination", 1_800_000_000)
        hub = await hub_factory({"practices": [pims_practice(
            [ezyvet_entry(fake, reminders=True)])]})
        [run] = await sync_practices(hub, practice="oak")
        assert run.status == "succeeded", run.error
        [reminder] = await rows(hub, Reminder)
        assert reminder.service == "Rabies vaccination" and contact["id"]
        # without reminders = true the same site's endpoint is never read
        fake.requests.clear()
        hub2 = await hub_factory({"practices": [pims_practice([ezyvet_entry(fake)])]})
        [run2] = await sync_practices(hub2, practice="oak")
        assert run2.status == "succeeded" and not fake.api_calls("/v1/reminder")
        assert "read-reminder" not in fake.token_bodies[-1]["scope"]


async def test_an_optional_resource_refused_403_is_skipped(hub_factory, pims_practice,
                                                           fake_ezyvet, ezyvet_entry) -> None:
    one_client(fake_ezyvet)
    fake_ezyvet.deny("consult")
    hub = await hub_factory({"practices": [pims_practice([ezyvet_entry(fake_ezyvet)])]})
    [run] = await sync_practices(hub, practice="oak")
    assert run.status == "succeeded", run.error
    assert await rows(hub, Visit) == [] and len(await rows(hub, Appointment)) == 1
    # a core resource refused is still a failed sync
    fake_ezyvet.deny("animal")
    [run2] = await sync_practices(hub, practice="oak", full=True)
    assert run2.status == "failed" and "403" in run2.error and "read-animal" in run2.error


async def test_lookups_are_resolved_by_name_and_scoped(hub_factory, pims_practice, fake_ezyvet,
                                                       ezyvet_entry) -> None:
    contact = one_client(fake_ezyvet)
    hub = await hub_factory({"practices": [pims_practice([ezyvet_entry(fake_ezyvet)])]})
    [run] = await sync_practices(hub, practice="oak")
    assert run.status == "succeeded", run.error
    [client] = await rows(hub, Client)
    [appointment] = await rows(hub, Appointment)
    # the fake's ids (37, 41, 13...) are not the 1..6 the connector once hard-coded
    assert DETAIL_TYPE_IDS["Email"] != 1 and APPOINTMENT_STATUS_IDS["Confirmed"] != 2
    assert (client.external_id, client.email, client.phone_mobile) == (
        str(contact["id"]), "ann@example.com", "+14155551000")
    assert appointment.status == "confirmed"
    scopes = fake_ezyvet.token_bodies[0]["scope"].split(",")
    assert {"read-contactdetailtype", "read-appointmentstatus"} <= set(scopes)
    assert len(fake_ezyvet.api_calls("/v1/contactdetailtype")) == 1  # once per run


async def test_a_token_without_a_lookup_scope_is_refused_like_ezyvet(fake_ezyvet) -> None:
    async with aiohttp.ClientSession() as http:
        client = EzyVetClient(http, fake_ezyvet.base_url, Credentials(
            fake_ezyvet.client_id, fake_ezyvet.client_secret, fake_ezyvet.partner_id,
            "read-contact read-contactdetail"))  # space-separated: the fake takes either
        assert (await client.get("/v1/contactdetail", {}))["messages"] == []
        with pytest.raises(NotAvailable, match="403.*read-contactdetailtype"):
            await client.get("/v1/contactdetailtype", {})


async def test_changed_details_and_addresses_re_emit_their_contact(
    hub_factory, pims_practice, fake_ezyvet, ezyvet_entry,
) -> None:
    ann = one_client(fake_ezyvet)
    bob = one_client(fake_ezyvet, "Bob")
    fake_ezyvet.advance(60)
    hub = await hub_factory({"practices": [pims_practice([ezyvet_entry(fake_ezyvet)])]})
    [run] = await sync_practices(hub, practice="oak")
    assert run.status == "succeeded", run.error
    contact_modified = {c["id"]: c["modified_at"] for c in fake_ezyvet.tables["contact"].values()}

    fake_ezyvet.advance(60)
    fake_ezyvet.set_detail(ann["id"], DETAIL_EMAIL, "ann.new@example.com")
    fake_ezyvet.set_address(bob["id"], street_1="9 Elm St")
    # the fake does not move the contacts' own modified_at, as ezyVet may not
    assert {c["id"]: c["modified_at"]
            for c in fake_ezyvet.tables["contact"].values()} == contact_modified
    [run2] = await sync_practices(hub, practice="oak")
    assert run2.status == "succeeded", run2.error
    assert run2.counts["client"]["updated"] == 2
    clients = {c.external_id: c for c in await rows(hub, Client)}
    assert clients[str(ann["id"])].email == "ann.new@example.com"
    assert clients[str(bob["id"])].address_line1 == "9 Elm St"


def test_token_lifetime_is_capped_and_reads_epochs() -> None:
    now = datetime(2026, 12, 7, tzinfo=UTC)
    assert token_lifetime(3600, now) == timedelta(hours=1)
    assert token_lifetime(1209600, now) == timedelta(hours=12)  # ezyVet's example value
    in_two_hours = (now + timedelta(hours=2)).timestamp()
    assert token_lifetime(in_two_hours, now) == timedelta(hours=2)
    assert token_lifetime((now + timedelta(days=3)).timestamp(), now) == timedelta(hours=12)
    assert join_scopes(["read-contact", "read-animal", "read-contact"]) == "read-contact,read-animal"


async def test_epoch_expires_in_and_long_ttl_renew_within_12_hours(fake_ezyvet) -> None:
    fake_ezyvet.expires_in_epoch = True
    fake_ezyvet.token_ttl = 14 * 86400
    clock = FrozenClock(datetime.now(UTC))
    async with aiohttp.ClientSession() as http:
        client = EzyVetClient(http, fake_ezyvet.base_url, Credentials(
            fake_ezyvet.client_id, fake_ezyvet.client_secret, fake_ezyvet.partner_id,
            ("read-contact",)), now=clock.now, renew_before=300)
        await client.get("/v1/contact", {})
        expires = client.token_expires_at
        assert expires is not None and expires - clock.now() == timedelta(hours=12)
        clock.advance(seconds=12 * 3600 - 200)
        await client.get("/v1/contact", {})
        assert fake_ezyvet.token_requests == 2


async def test_one_token_per_partner_and_site(hub_factory, pims_practice, fake_ezyvet,
                                             ezyvet_entry) -> None:
    """Two practices on one ezyVet site: a new token may invalidate the previous one, so the
    entries share one."""
    fake_ezyvet.one_token_per_site = True
    one_client(fake_ezyvet)
    hub = await hub_factory({"practices": [
        pims_practice([ezyvet_entry(fake_ezyvet)], slug="oak"),
        pims_practice([ezyvet_entry(fake_ezyvet)], slug="elm")]})
    for _ in range(2):
        results = await sync_practices(hub)
        assert [r.status for r in results] == ["succeeded", "succeeded"], [r.error for r in results]
    assert fake_ezyvet.token_requests == 1


async def test_unknown_comms_flag_vetoes_marketing_only(hub_factory, pims_practice, fake_ezyvet,
                                                        ezyvet_entry, smtp_sink) -> None:
    one_client(fake_ezyvet)
    email = {"backend": "smtp", "host": "127.0.0.1", "port": smtp_sink.port, "tls": "none",
             "from_address": "hub@vet.example"}

    async def verdicts(messaging: dict) -> dict[str, tuple[str, list[str]]]:
        hub = await hub_factory({"practices": [pims_practice([ezyvet_entry(fake_ezyvet)])],
                                 "email": email, "messaging": messaging})
        [run] = await sync_practices(hub, practice="oak")
        assert run.status == "succeeded", run.error
        [client] = await rows(hub, Client)  # the hubs share one database: one client
        assert client.comms_disabled is None
        out = {}
        for category in ("marketing", "reminder"):
            async with hub.transaction() as s:
                comm = await queue_communication(
                    s, hub, client_id=client.id, template="message", category=category,
                    channels=("email",), context={"subject": "Hello", "body": "News"})
            out[category] = (comm.verdict, [r["code"] for r in comm.verdict_reasons])
            assert (comm.status == "suppressed") == (comm.verdict == "veto")
        return out

    default = await verdicts({"quiet_hours_start": "00:00", "quiet_hours_end": "00:00"})
    assert default["marketing"] == ("veto", ["pims_comms_unknown"])
    assert default["reminder"][0] == "allow"
    relaxed = await verdicts({"quiet_hours_start": "00:00", "quiet_hours_end": "00:00",
                              "unknown_comms_flag_vetoes": []})
    assert relaxed["marketing"][0] == "allow"


def test_fields_no_ezyvet_field_supplies_are_declared_and_left_at_their_defaults() -> None:
    from connectors.ezyvet.connector import EzyVetConnector
    from hub.pims.records import ClientRecord

    declared = set(EzyVetConnector.unsupplied_fields)
    assert {"comms_disabled", "client_class", "balance", "email_status", "pet_app_status"} <= declared
    assert ClientRecord.__dataclass_fields__["email_status"].default == "unverified"
    assert ClientRecord.__dataclass_fields__["pet_app_status"].default == "unregistered"
