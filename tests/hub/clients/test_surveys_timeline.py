"""Surveys after visits through a signed link, and the client's timeline."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from hub.clients.models import SurveyRequest
from hub.clients.reminders import run_reminders
from hub.clients.surveys import PURPOSE
from hub.messaging import links, service
from hub.messaging.models import Communication

from .conftest import World


async def surveys_sent(world: World) -> list[tuple[SurveyRequest, Communication]]:
    await run_reminders(world.hub, surveys=True)
    async with world.hub.sessionmaker() as s:
        return list((await s.execute(
            select(SurveyRequest, Communication)
            .join(Communication, Communication.id == SurveyRequest.communication_id)
            .order_by(SurveyRequest.id))).all())


def token_of(comm: Communication) -> str:
    return comm.context["survey_url"].rsplit("/", 1)[-1]


async def test_a_survey_after_each_recent_visit_once(world: World) -> None:
    now = world.clock.now()
    recent = {v[0] for v in world.data.visits
              if now - timedelta(days=7) <= _at(v[3]) <= now}
    assert recent, "the generator made no visit in the last week"
    sent = await surveys_sent(world)
    async with world.hub.sessionmaker() as s:
        rows = (await s.execute(select(SurveyRequest))).scalars().all()
    assert {r.visit_external_id for r in rows} <= recent
    assert len({r.visit_external_id for r in rows}) == len(rows)
    assert sent and all(c.category == "survey" and c.template == "survey" for _r, c in sent)
    assert {c.status for _r, c in sent} <= {"queued", "suppressed", "deferred"}
    queued = [c for _r, c in sent if c.status == "queued"]
    assert queued and all("/surveys/" in (c.body_text or "") for c in queued)
    # the next run asks about nothing twice
    assert (await run_reminders(world.hub, surveys=True)).surveys == 0


async def test_answer_by_signed_link(world: World, api_of) -> None:
    sent = await surveys_sent(world)
    survey, comm = next((r, c) for r, c in sent if c.status == "queued")
    token = token_of(comm)
    anyone = await anonymous(api_of)
    page = await anyone.get(f"/surveys/{token}")
    assert page.status == 200 and "rating" in await page.text()
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert (await anyone.post(f"/api/surveys/{tampered}", json={"rating": 5})).status == 404
    forged = links.sign(b"not the hub's secret", PURPOSE, {"s": survey.id}, None)
    assert (await anyone.post(f"/api/surveys/{forged}", json={"rating": 5})).status == 404
    assert (await anyone.post(f"/api/surveys/{token}", json={"rating": 6})).status == 422
    resp = await anyone.post(f"/api/surveys/{token}", json={"rating": 4, "comment": "Kind staff"})
    assert resp.status == 201, await resp.text()
    again = await anyone.post(f"/api/surveys/{token}", json={"rating": 1})
    assert again.status == 409 and (await again.json())["error"]["code"] == "survey_answered"
    staff = await api_of("practice_staff", practice_id=world.practice_id)
    body = await (await staff.get(f"/api/clients/{survey.client_id}")).json()
    assert body["summary"]["last_survey"]["rating"] == 4
    assert body["summary"]["last_survey"]["comment"] == "Kind staff"
    assert [s["rating"] for s in body["surveys"]] == [4]
    other = next(r for r, _c in sent if r.client_id != survey.client_id)
    body = await (await staff.get(f"/api/clients/{other.client_id}")).json()
    assert "surveys" not in body and body["summary"]["last_survey"] is None
    listed = await (await staff.get(f"/api/clients/{survey.client_id}/surveys")).json()
    assert [s["comment"] for s in listed["items"]] == ["Kind staff"]
    # the form posts to the same service; expired links are refused with 410
    _r2, comm2 = next((r, c) for r, c in sent if c.status == "queued" and r.id != survey.id)
    form = await anyone.post(f"/surveys/{token_of(comm2)}", data={"rating": "2"})
    assert form.status == 200 and "Thank you" in await form.text()
    _r3, comm3 = next((r, c) for r, c in sent if c.status == "queued"
                      and r.id not in (survey.id, _r2.id))
    world.clock.advance(days=31)
    late = await anyone.post(f"/api/surveys/{token_of(comm3)}", json={"rating": 3})
    assert late.status == 410
    for who in (await api_of("practice_staff", practice_id=world.other_id),
                await api_of("company_admin", company_id=world.company_id)):
        assert (await who.get(f"/api/clients/{survey.client_id}/surveys")).status == 404


async def anonymous(api_of):
    """An API client without a token (the survey link is the credential)."""
    client = await api_of("operator")
    client.headers = {}
    return client


async def test_opted_out_of_surveys_gets_none(world: World, api_of) -> None:
    staff = await api_of("practice_staff", practice_id=world.practice_id)
    first = await surveys_sent(world)
    # a later visit of a client who said no to surveys: suppressed, with the verdict's reason
    survey, comm = next((r, c) for r, c in first if c.status == "queued")
    await staff.put(f"/api/clients/{survey.client_id}/preferences", json={
        "items": [{"category": "survey", "channel": ch, "allowed": False}
                  for ch in ("email", "sms", "postcard")]})
    from hub.pims.models import Visit

    async with world.hub.transaction() as s:
        visit = (await s.execute(select(Visit).where(
            Visit.external_id == survey.visit_external_id))).scalar_one()
        s.add(Visit(practice_id=visit.practice_id, external_id="V-later",
                    patient_external_id=visit.patient_external_id,
                    client_external_id=visit.client_external_id,
                    visited_at=world.clock.now() - timedelta(hours=1)))
    await run_reminders(world.hub, surveys=True)
    async with world.hub.sessionmaker() as s:
        later = (await s.execute(select(SurveyRequest, Communication).join(
            Communication, Communication.id == SurveyRequest.communication_id).where(
            SurveyRequest.visit_external_id == "V-later"))).one()
    assert later[0].status == "suppressed"
    assert any(r["code"] == "preference_opt_out" for r in later[1].verdict_reasons)


async def test_timeline_newest_first_paginated(world_factory, api_of_factory) -> None:
    world = await world_factory(200, seed=5,
                                extra={"clients": {"practices": {"oak": {"loyalty": True}}}})
    api_of = await api_of_factory(world)
    sent = await surveys_sent(world)
    survey, comm = next((r, c) for r, c in sent if c.status == "queued")
    cid = survey.client_id
    staff = await api_of("practice_staff", practice_id=world.practice_id)
    anon = await anonymous(api_of)
    world.clock.advance(minutes=1)
    await world.hub.jobs.run_until_idle()  # the survey email goes out: sending, sent
    async with world.hub.transaction() as s:
        world.clock.advance(minutes=1)
        c = await s.get(Communication, comm.id)
        await service.apply_status(s, world.hub, c, "delivered", provider_status="250")
    world.clock.advance(minutes=1)
    async with world.hub.transaction() as s:  # the client replies to the survey email
        reply = await service.record_inbound(s, world.hub, channel="email",
                                             from_address=comm.address,
                                             to_address="hub@vet.example", body="Thanks!",
                                             provider_id="reply-1", raw={})
        assert reply.client_id == cid
    world.clock.advance(minutes=1)
    assert (await anon.post(f"/api/surveys/{token_of(comm)}", json={"rating": 5})).status == 201
    world.clock.advance(minutes=1)
    await staff.put(f"/api/clients/{cid}/preferences", json={
        "items": [{"category": "marketing", "channel": "email", "allowed": False}]})
    world.clock.advance(minutes=1)
    assert (await staff.post(f"/api/clients/{cid}/loyalty")).status == 201
    world.clock.advance(minutes=1)
    assert (await staff.post(f"/api/clients/{cid}/loyalty/adjustments",
                             json={"coins": 20, "reason": "referral"})).status == 201
    items, cursor = [], None
    while True:
        resp = await staff.get(f"/api/clients/{cid}/timeline",
                               params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        items += body["items"]
        cursor = body["next_cursor"]
        if not cursor:
            break
    keys = [(i["kind"], i["id"]) for i in items]
    assert len(keys) == len(set(keys))
    assert [i["at"] for i in items] == sorted((i["at"] for i in items), reverse=True)
    kinds = [i["kind"] for i in items]
    assert kinds[:5] == ["loyalty", "loyalty", "preference", "survey_response", "inbound"]
    assert items[4]["body"] == "Thanks!" and items[4]["communication_id"] == comm.id
    survey_comm = next(i for i in items if i["kind"] == "communication" and i["id"] == comm.id)
    assert [h["status"] for h in survey_comm["history"]] == ["queued", "sending", "sent",
                                                             "delivered"]
    for who in (await api_of("practice_staff", practice_id=world.other_id),
                await api_of("company_admin", company_id=world.company_id)):
        assert (await who.get(f"/api/clients/{cid}/timeline")).status == 404


def _at(text: str):
    from datetime import datetime

    return datetime.fromisoformat(text)
