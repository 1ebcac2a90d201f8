"""An operator in the browser: replay a dead job and see it succeed; rejected associations;
PIMS sync and its rejects per practice; plugins and health; tokens (revoke one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hub import events
from hub.hookspecs import hookimpl
from hub.jobs import PermanentJobError
from hub.pims.sync import sync_practices
from hub.testing.exports import bad_rows, generate, make_stable, write_export

from .console_world import go, sign_in

FLAKY = {"broken": True, "runs": 0}


async def flaky_job(hub: Any, job: Any) -> None:
    FLAKY["runs"] += 1
    if FLAKY["broken"]:
        raise PermanentJobError("the peer refused: 550 mailbox unavailable")


class FlakyPlugin:
    @hookimpl
    def vethub_job_handlers(self) -> dict[str, Any]:
        return {"test.flaky": flaky_job}


async def test_operator_replays_a_dead_job_and_sees_it_succeed(console_world, browser, check) -> None:
    FLAKY.update(broken=True, runs=0)
    world = await console_world(plugins=[("flaky", FlakyPlugin())])
    await world.add_user("operator", "ops@vethub.example")
    async with world.hub.transaction() as s:
        job = await world.hub.jobs.enqueue(s, "test.flaky", {"to": "x@example.com"})
    await world.hub.jobs.run_until_idle()
    page = await (await browser.new_context()).new_page()
    await sign_in(page, world, "ops@vethub.example")
    await go(page, "Dead jobs")
    row = page.locator("tbody tr", has_text="test.flaky")
    assert "550 mailbox unavailable" in await row.inner_text()
    await check.page(page, "dead-jobs")

    FLAKY["broken"] = False  # the cause is fixed
    await row.get_by_role("button", name=f"Replay job {job.id}").click()
    await page.wait_for_load_state()
    assert "The job is queued again." in await page.locator(".notice").inner_text()
    assert await page.locator("tbody tr", has_text="test.flaky").count() == 0
    await world.hub.jobs.run_until_idle()
    await page.get_by_label("Status").select_option("succeeded")
    await page.get_by_role("button", name="Show").click()
    await page.wait_for_load_state()
    assert await page.locator("tbody tr", has_text="test.flaky").count() == 1
    assert FLAKY["runs"] == 2
    await check.page(page, "succeeded-jobs")
    # replaying it again is refused: it is not dead any more
    response = await page.request.post(world.url(f"/console/jobs/{job.id}/replay"),
                                       form={"csrf": await page.locator("input[name=csrf]").first.input_value()})
    assert response.status == 404


async def test_operator_pages_events_sync_plugins_tokens(console_world, browser, check, tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    data = generate(4, seed=1)
    data.clients += list(bad_rows().values())
    make_stable(*write_export(drop, data).values())
    world = await console_world(practices=[{"slug": "oak", "name": "Oak Vets", "country": "US",
                                            "pims": [{"connector": "file_export", "drop_dir": str(drop)}]}])
    [run] = await sync_practices(world.hub, practice="oak")
    assert run.status == "succeeded", run.error
    async with world.hub.transaction() as s:
        await events.record(s, "dicom.association_rejected", "rejected: calling AE STRANGER not registered",
                            data={"calling_ae": "STRANGER", "called_ae": "VETHUB", "address": "10.9.8.7"})
    await world.add_user("operator", "ops@vethub.example")
    page = await (await browser.new_context()).new_page()
    await sign_in(page, world, "ops@vethub.example")

    await go(page, "Rejected associations")
    assert "STRANGER" in await page.locator("tbody").inner_text()
    assert "10.9.8.7" in await page.locator("tbody").inner_text()
    await check.page(page, "rejected-associations")

    await go(page, "PIMS sync")
    text = await page.locator("main").inner_text()
    assert "Oak Vets" in text and "succeeded" in text and "CBAD0001" in text
    await check.page(page, "sync")

    await go(page, "Plugins")
    text = await page.locator("main").inner_text()
    assert "database" in text and "file_export" in text
    await check.page(page, "plugins")

    async with world.hub.transaction() as s:
        from hub.auth import issue_token
        _, token = await issue_token(s, role="operator", name="ci deploy")
    await go(page, "Tokens")
    await check.page(page, "tokens")
    row = page.locator("tbody tr", has_text="ci deploy")
    await row.get_by_role("button", name=f"Revoke token {token.prefix}").click()
    await page.wait_for_load_state()
    assert "revoked" in await page.locator("tbody tr", has_text="ci deploy").inner_text()
    # the operator's own session is still there and active
    assert "active" in await page.locator("tbody tr", has_text="ops@vethub.example").inner_text()
