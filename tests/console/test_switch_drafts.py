"""A practice's switch request by email in the browser: delivered over LMTP, it waits as a
draft that only an operator sees; the operator confirms one (the current company is asked) and
discards another with a reason."""

from __future__ import annotations

import asyncio

from plugins.inbound.plugin import listener_of
from tests.plugins.inbound.conftest import lmtp_send

from .console_world import ConsoleWorld, go, sign_in
from .test_switch_requests import _recent_case

INBOUND = {"listen": "127.0.0.1:0", "support_address": "support@vethub.example",
           "trusted_peers": ["127.0.0.1"]}  # the delivering MTA is trusted: its mail is believed


async def email_in(world: ConsoleWorld, subject: str, body: str) -> None:
    listener = listener_of(world.hub)
    assert listener is not None
    raw = (f"From: Dr Oak <desk@oak-vets.example>\r\nTo: support@vethub.example\r\nSubject: {subject}\r\n"
           f"Message-ID: <{abs(hash(subject))}@oak-vets.example>\r\n\r\n{body}\r\n").encode()
    code, text = await asyncio.to_thread(lmtp_send, listener.port, raw, "desk@oak-vets.example",
                                         "support@vethub.example")
    assert code == 250, text
    await world.hub.jobs.run_until_idle()


async def test_operator_confirms_one_draft_and_discards_another(console_world, browser, check) -> None:
    world = await console_world(inbound=INBOUND)
    await world.add_practice("oak-vets", "Oak Vets", ["read-right"])
    await _recent_case(world, "oak-vets", "read-right")
    await world.add_user("operator", "ops@vethub.example")
    await world.add_user("practice_staff", "staff@oak.example", practice="oak-vets")
    await world.add_user("company_admin", "admin@readright.example", company="read-right")
    await email_in(world, "Switching", "Please move our radiology account to ScanCo from May.")

    ops = await (await browser.new_context()).new_page()
    await sign_in(ops, world, "ops@vethub.example")
    await go(ops, "Switch requests")
    await ops.get_by_role("link", name="drafts to confirm").click()
    await ops.wait_for_load_state()
    assert "draft" in await ops.locator("table").inner_text()
    await ops.get_by_role("link", name="Oak Vets").click()
    await ops.wait_for_load_state()
    draft_path = ops.url.split("?")[0].removeprefix(world.base_url)
    await check.page(ops, "switch-draft")
    assert "move our radiology account to ScanCo" in await ops.locator("dd.statement").inner_text()

    for who in ("staff@oak.example", "admin@readright.example"):  # not theirs until confirmed
        page = await (await browser.new_context()).new_page()
        await sign_in(page, world, who)
        assert (await page.goto(world.url(draft_path))).status == 404
        await page.context.close()

    confirm = ops.get_by_role("form", name="Confirm the draft")
    # read from the email: the practice's one company, and the one it names
    assert await confirm.get_by_label("Current company").input_value() == "read-right"
    assert await confirm.get_by_label("New company").input_value() == "scan-co"
    await confirm.get_by_role("button", name="Confirm the request").click()
    await ops.wait_for_load_state()
    assert "authorised" in await ops.locator(".error").inner_text()  # the box was not ticked
    await ops.get_by_role("form", name="Confirm the draft").get_by_label(
        "The sender is authorised to act for the practice").check()
    await ops.get_by_role("form", name="Confirm the draft").get_by_role("button", name="Confirm the request").click()
    await ops.wait_for_load_state()
    facts = await ops.locator("dl.facts").inner_text()
    assert "awaiting response" in facts and "Answer due by" in facts
    trail = await ops.locator("table").inner_text()
    assert "drafted" in trail and "confirmed" in trail and "notified" in trail
    await check.page(ops, "switch-draft-confirmed")

    admin = await (await browser.new_context()).new_page()
    await sign_in(admin, world, "admin@readright.example")
    assert (await admin.goto(world.url(draft_path))).status == 200  # now a request it answers
    assert await admin.get_by_role("button", name="Object").count() == 1

    await email_in(world, "Change of provider?", "Could we change our radiology company one day?")
    await ops.goto(world.url("/console/switch-requests?f_state=draft"))
    await ops.get_by_role("link", name="Oak Vets").click()
    await ops.wait_for_load_state()
    discard = ops.get_by_role("form", name="Discard the draft")
    await discard.get_by_label("Why it is discarded").fill("a question, not a request; answered by phone")
    await discard.get_by_role("button", name="Discard").click()
    await ops.wait_for_load_state()
    facts = await ops.locator("dl.facts").inner_text()
    assert "discarded" in facts and "answered by phone" in facts
    assert await ops.get_by_role("form", name="Confirm the draft").count() == 0
