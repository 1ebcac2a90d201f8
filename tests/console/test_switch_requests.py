"""Switching in the browser: the practice's written request, the current company's answer, the
decision trail, and a company the request does not concern answering 404."""

from __future__ import annotations

from datetime import timedelta

from hub.imaging.models import Case, Study

from .console_world import go, sign_in


async def _recent_case(world, practice: str, company: str) -> None:
    at = world.hub.clock.now() - timedelta(days=10)
    async with world.hub.transaction() as s:
        study = Study(practice_id=world.practices[practice], study_instance_uid="1.2.3.4", modalities=["DX"],
                      instance_count=1, size_bytes=1, status="stable", first_received_at=at, last_received_at=at)
        s.add(study)
        await s.flush()
        s.add(Case(practice_id=world.practices[practice], study_id=study.id,
                   account_id=world.accounts[(practice, company)], company_id=world.companies[company],
                   status="delivered", submitted_by="test", created_at=at, updated_at=at))


async def test_practice_requests_a_switch_and_the_current_company_approves(console_world, browser, check) -> None:
    world = await console_world(companies=[
        {"slug": "read-right", "name": "ReadRight Radiology", "email": "admin@readright.example"},
        {"slug": "scan-co", "name": "ScanCo", "email": "desk@scanco.example"},
        {"slug": "third", "name": "Third Reads", "email": "t@third.example"}])
    await world.add_practice("oak-vets", "Oak Vets", ["read-right"])
    await _recent_case(world, "oak-vets", "read-right")
    await world.add_user("practice_staff", "desk@oak.example", practice="oak-vets")
    await world.add_user("company_admin", "admin@readright.example", company="read-right")
    await world.add_user("company_admin", "admin@third.example", company="third")

    staff = await (await browser.new_context()).new_page()
    await sign_in(staff, world, "desk@oak.example")
    await go(staff, "Switch or add a company")
    await check.page(staff, "switch-form")
    await staff.get_by_label("Current company", exact=True).select_option("read-right")
    await staff.get_by_label("New company", exact=True).select_option("scan-co")
    await staff.get_by_label("Your name").fill("Dr Oak")
    await staff.get_by_label("Your written request").fill("We move our reading to ScanCo from next month.")
    await staff.get_by_role("button", name="Send the request").click()
    await staff.wait_for_load_state()
    assert "authorised" in await staff.locator(".error").inner_text()  # the box was not ticked
    await staff.get_by_label("I am authorised to act for the practice").check()
    await staff.get_by_role("button", name="Send the request").click()
    await staff.wait_for_load_state()
    assert "awaiting response" in await staff.locator("dl.facts").inner_text()
    switch_path = staff.url.split("?")[0].removeprefix(world.base_url)
    await check.page(staff, "switch-request-staff")

    admin = await (await browser.new_context()).new_page()
    await sign_in(admin, world, "admin@readright.example")
    await go(admin, "Switch requests")
    await admin.get_by_role("link", name="Oak Vets").click()
    await admin.wait_for_load_state()
    await check.page(admin, "switch-request-company")
    await admin.get_by_role("button", name="Approve the switch").click()
    await admin.wait_for_load_state()
    assert "completed" in await admin.locator("dl.facts").inner_text()
    trail = await admin.locator("table").inner_text()
    assert "submitted" in trail and "responded" in trail

    await staff.reload()
    assert "completed" in await staff.locator("dl.facts").inner_text()

    other = await (await browser.new_context()).new_page()
    await sign_in(other, world, "admin@third.example")
    response = await other.goto(world.url(switch_path))
    assert response.status == 404
