"""Signing in and out of the console, the form token, lockout, headers, set-password links."""

from __future__ import annotations

from urllib.parse import urlsplit

from sqlalchemy import select

from hub.db.models import ApiToken, User

from .console_world import PASSWORD, sign_in


async def test_staff_sign_in_session_cookie_and_sign_out(console_world, browser, check) -> None:
    world = await console_world()
    await world.add_practice("oak-vets", "Oak Vets", ["read-right"])
    await world.add_user("practice_staff", "reception@oak.example", practice="oak-vets")
    page = await (await browser.new_context()).new_page()

    await page.goto(world.url("/console/accounts"))
    assert urlsplit(page.url).path == "/console/sign-in"  # signed out: sent to sign in
    await check.page(page, "sign-in")
    await sign_in(page, world, "reception@oak.example")
    assert urlsplit(page.url).path == "/console/"
    assert await page.locator("h1").inner_text() == "Oak Vets"
    await check.page(page, "home-staff")

    cookie = next(c for c in await page.context.cookies() if c["name"] == "vh_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and not cookie["secure"]  # public_url is http
    async with world.hub.sessionmaker() as s:
        row = (await s.execute(select(ApiToken).where(ApiToken.name == "reception@oak.example"))).scalar_one()
        assert row.expires_at is not None and row.revoked_at is None

    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_load_state()
    assert "You are signed out." in await page.content()
    async with world.hub.sessionmaker() as s:
        assert (await s.get(ApiToken, row.id)).revoked_at is not None
    # the old cookie value no longer opens anything
    await page.context.add_cookies([{**cookie}])
    await page.goto(world.url("/console/"))
    assert urlsplit(page.url).path == "/console/sign-in"


async def test_wrong_password_then_lockout(console_world, browser) -> None:
    world = await console_world()
    await world.add_user("operator", "ops@vethub.example")
    page = await (await browser.new_context()).new_page()
    for _ in range(4):
        await sign_in(page, world, "ops@vethub.example", "wrong password!")
        assert "wrong email or password" in await page.locator(".error").inner_text()
    await sign_in(page, world, "ops@vethub.example", "wrong password!")
    assert "too many failed sign-ins" in await page.locator(".error").inner_text()
    await sign_in(page, world, "ops@vethub.example", PASSWORD)  # even the right one, for a while
    assert "too many failed sign-ins" in await page.locator(".error").inner_text()
    assert urlsplit(page.url).path == "/console/sign-in"
    # another user is not locked out by it
    await world.add_user("operator", "ops2@vethub.example")
    await sign_in(page, world, "ops2@vethub.example")
    assert urlsplit(page.url).path == "/console/"


async def test_form_without_its_csrf_token_is_refused(console_world, browser) -> None:
    world = await console_world()
    await world.add_practice("oak-vets", "Oak Vets", ["read-right"])
    await world.add_user("practice_staff", "reception@oak.example", practice="oak-vets")
    page = await (await browser.new_context()).new_page()

    # the sign-in form itself, without its token
    refused = await page.request.post(world.url("/console/sign-in"),
                                      form={"email": "reception@oak.example", "password": PASSWORD},
                                      max_redirects=0)
    assert refused.status == 403
    assert not [c for c in await page.context.cookies() if c["name"] == "vh_session"]

    await sign_in(page, world, "reception@oak.example")
    for form in ({"email": "new@oak.example"}, {"email": "new@oak.example", "csrf": "forged"}):
        refused = await page.request.post(world.url("/console/colleagues"), form=form, max_redirects=0)
        assert refused.status == 403
        assert "Form expired" in await refused.text()
    async with world.hub.sessionmaker() as s:
        assert (await s.execute(select(User).where(User.email == "new@oak.example"))).first() is None
    # with the page's own token, the same form works
    await page.goto(world.url("/console/colleagues"))
    await page.get_by_label("Email").fill("new@oak.example")
    await page.get_by_role("button", name="Invite").click()
    await page.wait_for_load_state()
    assert "/set-password?token=" in await page.locator("code.link-out").inner_text()
    async with world.hub.sessionmaker() as s:
        user = (await s.execute(select(User).where(User.email == "new@oak.example"))).scalar_one()
        assert user.role == "practice_staff" and user.practice_id == world.practices["oak-vets"]


async def test_pages_carry_security_headers(console_world, browser) -> None:
    world = await console_world()
    page = await (await browser.new_context()).new_page()
    response = await page.goto(world.url("/console/sign-in"))
    headers = response.headers
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-store"


async def test_welcome_link_sets_a_password_then_sign_in(console_world, browser, check) -> None:
    world = await console_world()
    await world.add_practice("oak-vets", "Oak Vets", ["read-right"])
    link = await world.add_user("practice_staff", "vet@oak.example", practice="oak-vets", password=None)
    page = await (await browser.new_context()).new_page()
    parts = urlsplit(link)
    await page.goto(world.url(f"{parts.path}?{parts.query}"))
    await check.page(page, "set-password")
    await page.get_by_label("New password").fill("a long new password")
    await page.get_by_role("button", name="Set password").click()
    await page.wait_for_load_state()
    await check.page(page, "password-set")
    await page.get_by_role("link", name="Sign in").click()
    await page.wait_for_load_state()
    await sign_in(page, world, "vet@oak.example", "a long new password")
    assert urlsplit(page.url).path == "/console/"


async def test_start_up_says_how_to_create_the_first_operator(console_world, caplog) -> None:
    caplog.set_level("WARNING", logger="hub.console.app")
    world = await console_world()
    assert "vethub admin create-user" in caplog.text and "--role operator" in caplog.text
    await world.add_user("operator", "ops@vethub.example")
    caplog.clear()
    await console_world()  # a second app on a hub with an operator: no hint
    assert "create-user" not in caplog.text
