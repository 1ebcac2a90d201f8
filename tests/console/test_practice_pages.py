"""Practice staff in the browser on a synced practice: find a client by phone, change a
preference (saved after a reload, in the consent ledger), the retention calendar; another
practice's client answers 404."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from hub.db.models import Practice
from hub.messaging.models import ConsentRecord
from hub.pims.models import Client
from hub.pims.sync import sync_practices
from hub.testing.exports import generate, make_stable, write_export

from .console_world import go, sign_in


async def _synced(console_world, tmp_path: Path):
    drop = tmp_path / "drop"
    make_stable(*write_export(drop, generate(30, seed=7)).values())
    world = await console_world(
        practices=[{"slug": "oak", "name": "Oak Vets", "country": "US", "timezone": "America/New_York",
                    "pims": [{"connector": "file_export", "drop_dir": str(drop)}]},
                   {"slug": "elm", "name": "Elm Clinic", "country": "US"}],
        accounts=[{"practice": "oak", "company": "read-right"}, {"practice": "elm", "company": "read-right"}])
    [run] = await sync_practices(world.hub, practice="oak")
    assert run.status == "succeeded", run.error
    async with world.hub.sessionmaker() as s:
        world.practices.update({slug: pid for slug, pid in (await s.execute(select(Practice.slug, Practice.id))).all()})
        client = (await s.execute(select(Client).where(Client.phone_mobile.is_not(None))
                                  .order_by(Client.id))).scalars().first()
    return world, client


async def test_staff_finds_a_client_by_phone_and_changes_a_preference(console_world, browser, check,
                                                                      tmp_path: Path) -> None:
    world, client = await _synced(console_world, tmp_path)
    await world.add_user("practice_staff", "desk@oak.example", practice="oak")
    await world.add_user("practice_staff", "desk@elm.example", practice="elm")
    page = await (await browser.new_context()).new_page()
    await sign_in(page, world, "desk@oak.example")
    await go(page, "Clients")
    await check.page(page, "clients")
    digits = client.phone_mobile.removeprefix("+1")
    await page.get_by_label("Name, email, phone or PIMS id").fill(f"({digits[:3]}) {digits[3:6]}-{digits[6:]}")
    await page.get_by_role("button", name="Search").click()
    await page.wait_for_load_state()
    rows = page.locator("table tbody tr")
    assert await rows.count() == 1
    assert client.last_name in await rows.inner_text()
    await rows.get_by_role("link", name=client.first_name).click()
    await page.wait_for_load_state()
    assert await page.locator("h1").inner_text() != ""
    await check.page(page, "client")

    await page.get_by_label("News and offers by email").select_option("no")
    await page.get_by_label("Note (why; kept in the consent ledger)").fill("asked at the desk")
    await page.get_by_role("button", name="Save").click()
    await page.wait_for_load_state()
    assert "Saved." in await page.locator(".notice").inner_text()
    await page.reload()
    assert await page.get_by_label("News and offers by email").input_value() == "no"
    assert await page.get_by_label("News and offers by SMS").input_value() == ""  # untouched
    async with world.hub.sessionmaker() as s:
        ledger = [(r.category, r.channel, r.allowed, r.source) for r in (await s.execute(
            select(ConsentRecord).where(ConsentRecord.client_id == client.id))).scalars()]
    assert ledger == [("marketing", "email", False, "staff")]
    assert "marketing" in await page.locator("#timeline ~ table").inner_text()

    await go(page, "Retention calendar")
    await check.page(page, "retention-calendar")

    other = await (await browser.new_context()).new_page()
    await sign_in(other, world, "desk@elm.example")
    response = await other.goto(world.url(f"/console/clients/{client.id}"))
    assert response.status == 404
    await other.goto(world.url("/console/clients?q=" + client.last_name))
    assert await other.locator("table tbody").inner_text() == "Nothing to show."
