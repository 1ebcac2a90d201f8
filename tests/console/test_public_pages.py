"""The no-login pages in the console's look, each naming the practice it is for: the client's
preference page (unsubscribe from one category), the unsubscribe page, the account request form."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from hub.messaging import links
from hub.messaging.models import ConsentRecord
from hub.messaging.outbound import unsubscribe_token
from hub.pims.models import Client


async def _client(world) -> int:
    async with world.hub.transaction() as s:
        c = Client(practice_id=world.practices["oak-vets"], external_id="C1", first_name="Ann", last_name="Lee",
                   status="active", email="ann@example.org", phone_mobile="+12025550143", country="US")
        s.add(c)
        await s.flush()
        return c.id


async def test_preference_page_unsubscribes_from_one_category(console_world, browser, check) -> None:
    world = await console_world()
    await world.add_practice("oak-vets", "Oak Vets", ["read-right"])
    client_id = await _client(world)
    token = links.sign(links.secret_of(world.hub), "prefs", {"c": client_id},
                       world.hub.clock.now() + timedelta(days=30))
    page = await (await browser.new_context()).new_page()
    await page.goto(world.url(f"/messaging/preferences/{token}"))
    assert "Oak Vets" in await page.locator("main").inner_text()
    await check.page(page, "preferences")

    await page.get_by_label("Surveys after a visit").uncheck()
    await page.get_by_role("button", name="Save").click()
    await page.wait_for_load_state()
    assert "Your choices are saved." in await page.locator("main").inner_text()
    assert not await page.get_by_label("Surveys after a visit").is_checked()
    assert await page.get_by_label("Vaccination and health reminders").is_checked()
    async with world.hub.sessionmaker() as s:
        rows = [(r.category, r.channel, r.allowed, r.source) for r in
                (await s.execute(select(ConsentRecord).where(ConsentRecord.client_id == client_id))).scalars()]
    assert rows == [("survey", "*", False, "preference_page")]  # one category, nothing else

    # the unsubscribe page: a button (GET changes nothing), for this practice
    facts = type("F", (), {"id": client_id})()
    unsub = unsubscribe_token(world.hub, facts, "marketing", "ann@example.org")
    await page.goto(world.url(f"/messaging/unsubscribe/{unsub}"))
    assert "Oak Vets" in await page.locator("main").inner_text()
    await check.page(page, "unsubscribe")
    await page.get_by_role("button", name="Unsubscribe").click()
    await page.wait_for_load_state()
    await check.page(page, "unsubscribed")
    async with world.hub.sessionmaker() as s:
        cats = sorted(r.category for r in (await s.execute(
            select(ConsentRecord).where(ConsentRecord.client_id == client_id))).scalars())
    assert cats == ["marketing", "survey"]


async def test_account_request_form_in_the_console_look(console_world, browser, check) -> None:
    world = await console_world()
    page = await (await browser.new_context()).new_page()
    response = await page.goto(world.url("/account-request"))
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    await check.page(page, "account-request-form")
    await page.get_by_label("Company").select_option("read-right")
    await page.get_by_label("Practice name").fill("Willow Vets")
    await page.get_by_label("Email").fill("desk@willow.example")
    await page.get_by_role("button", name="Send the request").click()
    await page.wait_for_load_state()
    assert await page.locator("h1").inner_text() == "Request received"
    await check.page(page, "account-request-received")


async def test_survey_page_in_the_console_look(console_world, browser, check) -> None:
    from hub.clients.models import SurveyRequest
    from hub.clients.surveys import token_for

    world = await console_world()
    await world.add_practice("oak-vets", "Oak Vets", ["read-right"])
    client_id = await _client(world)
    async with world.hub.transaction() as s:
        survey = SurveyRequest(practice_id=world.practices["oak-vets"], client_id=client_id,
                               visit_external_id="V1", status="queued")
        s.add(survey)
        await s.flush()
        survey_id = survey.id
    page = await (await browser.new_context()).new_page()
    await page.goto(world.url(f"/surveys/{token_for(world.hub, survey_id, world.hub.clock.now())}"))
    assert await page.locator("h1").inner_text() == "How was your visit to Oak Vets?"
    await check.page(page, "survey")
    await page.get_by_label("4").check()
    await page.get_by_label("Anything to add? (optional)").fill("Kind staff")
    await page.get_by_role("button", name="Send").click()
    await page.wait_for_load_state()
    assert await page.locator("h1").inner_text() == "Thank you"
    await check.page(page, "survey-answered")
    async with world.hub.sessionmaker() as s:
        answered = await s.get(SurveyRequest, survey_id)
        assert (answered.rating, answered.comment) == (4, "Kind staff")
