"""The API reference at /api/docs renders in a real browser from the vendored viewer alone."""

from __future__ import annotations

from typing import Any


async def test_the_viewer_renders_the_spec_under_its_csp(console_world: Any, browser: Any) -> None:
    world = await console_world()
    page = await (await browser.new_context()).new_page()
    failures: list[str] = []
    missing: list[str] = []
    page.on("response", lambda resp: missing.append(resp.url) if resp.status >= 400 else None)
    page.on("requestfailed", lambda req: failures.append(f"failed: {req.url}"))
    outside: list[str] = []
    page.on("request", lambda req: outside.append(req.url) if not req.url.startswith(world.url("")) else None)
    await page.goto(world.url("/api/docs"))
    await page.get_by_text("/api/practices/{id}").first.wait_for(timeout=30_000)
    assert await page.get_by_text("VetHub API").first.is_visible()
    # (a browser asks for /favicon.ico on its own; the page itself loads nothing that is missing)
    assert [u for u in missing if not u.endswith("/favicon.ico")] == []
    assert failures == [] and [u for u in outside if not u.startswith("data:")] == []
