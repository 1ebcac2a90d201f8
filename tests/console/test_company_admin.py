"""A company admin in the browser: accounts (filter, CSV, suspend, re-approve), account requests,
the onboarding report with CSV and PDF, and another tenant's pages answering 404."""

from __future__ import annotations

import csv
import io
import re
from datetime import date
from urllib.parse import urlsplit

from hub.accounts import onboarding

from .console_world import go, sign_in

REQUEST = {
    "company": "read-right", "practice_name": "Elm Street Vets", "contact_name": "Dr Ada Brown",
    "email": "ada@elm.example", "phone": "+44 113 496 0000",
    "address": {"line1": "1 Elm St", "city": "Leeds", "postcode": "LS1 1AA", "country": "GB"},
    "pims": "ezyVet", "imaging_software": "Vet-Rocket", "modalities": ["DX"],
}


async def test_accounts_filter_csv_suspend_and_reapprove(console_world, browser, check) -> None:
    world = await console_world()
    await world.add_practice("oak-vets", "Oak Vets", ["read-right"])
    await world.add_practice("birch-clinic", "Birch Clinic", ["read-right"])
    await world.add_practice("scan-only", "Scan Only Vets", ["scan-co"])  # another company's
    await world.add_user("company_admin", "admin@readright.example", company="read-right")
    await world.add_user("practice_staff", "desk@oak.example", practice="oak-vets")
    admin = await (await browser.new_context(accept_downloads=True)).new_page()
    staff = await (await browser.new_context()).new_page()

    await sign_in(admin, world, "admin@readright.example")
    await go(admin, "Accounts")
    table = admin.locator("table tbody")
    assert await table.locator("tr").count() == 2  # not ScanCo's practice
    await check.page(admin, "accounts")

    await admin.get_by_label("Filter by Practice").fill("oak")
    await admin.get_by_role("button", name="Filter").click()
    await admin.wait_for_url("**f_practice=oak**")
    assert await table.locator("tr").count() == 1
    assert "Oak Vets" in await table.inner_text()
    async with admin.expect_download() as dl:
        await admin.get_by_role("link", name="Export CSV").click()
    rows = list(csv.reader(io.StringIO((await (await dl.value).path()).read_text("utf-8"))))
    assert rows[0][:3] == ["Practice", "Company", "Approved for access"]
    assert [r[0] for r in rows[1:]] == ["Oak Vets"]

    await admin.get_by_role("link", name="Oak Vets").click()
    await admin.wait_for_load_state()
    await check.page(admin, "account")
    await admin.get_by_label("Approved for Access").uncheck()
    await admin.get_by_role("button", name="Save").click()
    await admin.wait_for_load_state()
    assert "access suspended" in await admin.locator("dl.facts").inner_text()
    assert "suspended" in await admin.locator("table").inner_text()  # the history

    await sign_in(staff, world, "desk@oak.example")
    assert await staff.locator("h1").inner_text() == "Access suspended"
    assert "ReadRight Radiology" in await staff.locator("main").inner_text()
    assert "admin@readright.example" in await staff.locator("main").inner_text()
    await check.page(staff, "suspended")

    await admin.get_by_label("Approved for Access").check()
    await admin.get_by_role("button", name="Save").click()
    await admin.wait_for_load_state()
    assert "reinstated" in await admin.locator("table").inner_text()
    await sign_in(staff, world, "desk@oak.example")
    assert urlsplit(staff.url).path == "/console/"


async def test_another_tenants_pages_answer_404(console_world, browser, check) -> None:
    world = await console_world()
    await world.add_practice("scan-only", "Scan Only Vets", ["scan-co"])
    await world.add_user("company_admin", "admin@readright.example", company="read-right")
    page = await (await browser.new_context()).new_page()
    await sign_in(page, world, "admin@readright.example")
    theirs = world.accounts[("scan-only", "scan-co")]
    for path in (f"/console/accounts/{theirs}", "/console/accounts/999999", "/console/account-requests/5",
                 "/console/switch-requests/1", "/console/accounts/99999999999999999999"):
        response = await page.goto(world.url(path))
        assert response.status == 404, path
        assert await page.locator("h1").inner_text() == "Not found"
    await check.page(page, "not-found")
    response = await page.request.post(world.url(f"/console/accounts/{theirs}"), form={"csrf": "x"})
    assert response.status == 403  # no token: refused before anything is looked up
    response = await page.goto(world.url("/console/jobs"))  # an operator's page
    assert response.status == 403


async def test_account_request_accept_and_onboarding_report(console_world, browser, check) -> None:
    world = await console_world()
    await world.add_user("company_admin", "admin@readright.example", company="read-right")
    async with world.hub.transaction() as s:
        await onboarding.submit_request(s, world.hub, REQUEST)
    page = await (await browser.new_context(accept_downloads=True)).new_page()
    await sign_in(page, world, "admin@readright.example")

    await go(page, "Account requests")
    await check.page(page, "account-requests")
    await page.get_by_role("link", name="Elm Street Vets").click()
    await page.wait_for_load_state()
    await check.page(page, "account-request")
    await page.get_by_role("button", name="Accept").click()
    await page.wait_for_load_state()
    assert "accepted" in await page.locator("dl.facts").inner_text()

    await go(page, "Onboarding report")
    today = date.today().isoformat()
    await page.get_by_label("From").fill("2020-01-01")
    await page.get_by_label("To").fill(today)
    await page.get_by_role("button", name="Show report").click()
    await page.wait_for_load_state()
    body = await page.locator("table").inner_text()
    assert "Elm Street Vets" in body and "ReadRight Radiology" in body
    await check.page(page, "onboarding-report")

    async with page.expect_download() as dl:
        await page.get_by_role("link", name="CSV").click()
    text = (await (await dl.value).path()).read_text("utf-8")
    assert "Elm Street Vets" in text
    async with page.expect_download() as dl:
        await page.get_by_role("link", name="PDF").click()
    download = await dl.value
    assert download.suggested_filename == "onboarding.pdf"
    assert (await download.path()).read_bytes().startswith(b"%PDF")

    # a range before any request: an empty report, said so
    await page.get_by_label("From").fill("2020-01-01")
    await page.get_by_label("To").fill("2020-01-02")
    await page.get_by_role("button", name="Show report").click()
    await page.wait_for_load_state()
    assert "No account requests in this period." in await page.locator("table").inner_text()


async def test_ask_the_practice_for_more_information(console_world, browser, check, smtp_sink) -> None:
    world = await console_world(email={"backend": "smtp", "host": "127.0.0.1", "port": smtp_sink.port,
                                       "tls": "none", "from_address": "hub@vethub.example"})
    await world.add_user("company_admin", "admin@readright.example", company="read-right")
    async with world.hub.transaction() as s:
        req, _ = await onboarding.submit_request(s, world.hub, REQUEST)
    await world.hub.jobs.run_until_idle()
    before = len(smtp_sink.messages)
    page = await (await browser.new_context()).new_page()
    await sign_in(page, world, "admin@readright.example")
    await page.goto(world.url(f"/console/account-requests/{req.id}"))
    await page.get_by_label("Your question").fill("Do you read your own ultrasound?")
    await page.get_by_label("Details to fill in").fill("vat_number")
    await page.get_by_role("button", name="Send to the practice").click()
    await page.wait_for_load_state()
    assert "information requested" in await page.locator("dl.facts").inner_text()
    await world.hub.jobs.run_until_idle()
    mail = smtp_sink.messages[before].message
    text = mail.get_body(("plain",)).get_content()
    assert "Do you read your own ultrasound?" in text and "Vat number" in text
    url = urlsplit(re.search(r"(http\S+/complete\?token=\S+)", text).group(1))

    practice = await (await browser.new_context()).new_page()
    await practice.goto(world.url(f"{url.path}?{url.query}"))
    assert "Do you read your own ultrasound?" in await practice.locator("main").inner_text()
    await check.page(practice, "complete-request")
    await practice.get_by_label("Your answer").fill("No, we send every study out.")
    await practice.get_by_label("Vat number").fill("GB123456789")
    await practice.get_by_role("button", name="Send").click()
    await practice.wait_for_load_state()

    await page.reload()
    facts = await page.locator("dl.facts").inner_text()
    assert "awaiting approval" in facts and "No, we send every study out." in facts and "GB123456789" in facts


async def test_list_filters_live_with_htmx_and_sort(console_world, browser) -> None:
    """With JavaScript (the vendored htmx, allowed by the CSP) a filter applies as you type;
    focus stays in the box; headings sort."""
    from playwright.async_api import expect

    world = await console_world()
    for slug, name in (("oak-vets", "Oak Vets"), ("birch-clinic", "Birch Clinic"), ("ash-vets", "Ash Vets")):
        await world.add_practice(slug, name, ["read-right"])
    await world.add_user("company_admin", "admin@readright.example", company="read-right")
    page = await (await browser.new_context()).new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await sign_in(page, world, "admin@readright.example")
    await go(page, "Accounts")
    box = page.get_by_label("Filter by Practice")
    await box.press_sequentially("birch")
    await expect(page.locator("table tbody tr")).to_have_count(1)
    await expect(page.locator("table tbody")).to_contain_text("Birch Clinic")
    await expect(page).to_have_url(re.compile(r"f_practice=birch"))
    await expect(box).to_be_focused()
    await box.fill("")
    await expect(page.locator("table tbody tr")).to_have_count(3)
    await page.locator("thead").get_by_role("link", name="Practice").click()
    await expect(page.locator("table tbody tr").first).to_contain_text("Ash Vets")
    await page.locator("thead").get_by_role("link", name="Practice").click()
    await expect(page.locator("table tbody tr").first).to_contain_text("Oak Vets")
    assert await page.locator("th[aria-sort=descending]").count() == 1
    assert errors == []  # nothing refused by the CSP, no script errors
