"""The console's browser tests: a real hub on a port-0 server, real sign-ins, headless Chromium
(Debian's, never a downloaded one) driven by Playwright, axe-core injected on every page."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer
from sqlalchemy import select

from hub.auth import Principal
from hub.console.users import create_user
from hub.core import Hub
from hub.db.models import Account, Company, Practice
from hub.testing.fixtures_core import deep_merge
from hub.testing.fixtures_env import skip_or_fail
from hub.web.app import create_app

CHROMIUM = os.environ.get("VETHUB_CHROMIUM", "/usr/bin/chromium")
AXE = Path(__file__).parent / "vendor" / "axe-4.14.1.min.js"
ARTIFACTS_ENV = "VETHUB_TEST_ARTIFACTS"
PASSWORD = "correct horse battery"


def console_config(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "hub": {"name": "VetHub test"},
        "dicom": {"port": 0, "ae_title": "VETHUB", "storage_root": str(tmp_path / "dicom")},
        "companies": [
            {"slug": "read-right", "name": "ReadRight Radiology", "email": "admin@readright.example",
             "modalities": ["DX", "CT", "US"]},
            {"slug": "scan-co", "name": "ScanCo", "email": "desk@scanco.example", "modalities": ["DX", "MR"]},
        ],
    }
    return deep_merge(base, overrides)


@dataclass
class ConsoleWorld:
    hub: Hub
    base_url: str
    companies: dict[str, int]
    practices: dict[str, int] = field(default_factory=dict)
    accounts: dict[tuple[str, str], int] = field(default_factory=dict)

    async def add_practice(self, slug: str, name: str, companies: list[str]) -> int:
        async with self.hub.transaction() as s:
            p = Practice(slug=slug, name=name, email=f"desk@{slug}.example", country="US", address={})
            s.add(p)
            await s.flush()
            for c in companies:
                a = Account(practice_id=p.id, company_id=self.companies[c], approved_for_access=True,
                            modalities=["DX"], status="active")
                s.add(a)
                await s.flush()
                self.accounts[(slug, c)] = a.id
            self.practices[slug] = p.id
            return p.id

    async def add_user(self, role: str, email: str, *, company: str | None = None,
                       practice: str | None = None, password: str | None = PASSWORD) -> str | None:
        """A user with a password (or, with ``password=None``, its set-password link)."""
        async with self.hub.transaction() as s:
            _, link, _ = await create_user(
                s, self.hub, Principal("operator", name="test"), role=role, email=email,
                company_id=self.companies[company] if company else None,
                practice_id=self.practices[practice] if practice else None, password=password)
        return link

    def url(self, path: str) -> str:
        return self.base_url + path


@pytest_asyncio.fixture
async def console_world(hub_factory: Callable[..., Awaitable[Hub]], tmp_path: Path
                        ) -> AsyncIterator[Callable[..., Awaitable[ConsoleWorld]]]:
    servers: list[TestServer] = []

    async def make(plugins: list[tuple[str, Any]] | None = None, **overrides: Any) -> ConsoleWorld:
        hub = await hub_factory(console_config(tmp_path, **overrides), plugins=plugins)
        server = TestServer(create_app(hub, start_hub=False, run_workers=False), host="127.0.0.1", port=0)
        await server.start_server()
        servers.append(server)
        async with hub.sessionmaker() as s:
            companies = {c.slug: c.id for c in (await s.execute(select(Company))).scalars()}
        return ConsoleWorld(hub, str(server.make_url("")).rstrip("/"), companies)

    yield make
    for server in servers:
        await server.close()


@pytest.fixture
def artifacts(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """Where screenshots go: ``$VETHUB_TEST_ARTIFACTS/<test>`` or the test's tmp_path."""
    root = os.environ.get(ARTIFACTS_ENV)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    path = Path(root) / name if root else tmp_path / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Any]:
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        skip_or_fail("CHROMIUM", f"the console's browser tests need Debian's chromium at {CHROMIUM} "
                                 "(apt-get install chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield b
        finally:
            await b.close()


class Checker:
    """Screenshot and axe-core check of every page a test visits."""

    def __init__(self, artifacts: Path) -> None:
        self.artifacts, self.count = artifacts, 0
        self.axe = AXE.read_text(encoding="utf-8")

    async def page(self, page: Any, name: str) -> None:
        self.count += 1
        await page.screenshot(path=str(self.artifacts / f"{self.count:02d}-{name}.png"), full_page=True)
        assert await page.locator("h1").count() == 1, f"{name}: a page has exactly one h1"
        for landmark in ("main", "header", "footer"):
            assert await page.locator(landmark).count() >= 1, f"{name}: no <{landmark}> landmark"
        if not await page.evaluate("typeof window.axe !== 'undefined'"):
            await page.evaluate(self.axe)
        result = await page.evaluate("axe.run(document, {resultTypes: ['violations']})")
        bad = [v for v in result["violations"] if v["impact"] in ("serious", "critical")]
        assert not bad, f"{name}: axe-core found " + json.dumps(
            [{"id": v["id"], "impact": v["impact"], "nodes": [n["html"] for n in v["nodes"][:3]]} for v in bad],
            indent=1)


@pytest.fixture
def check(artifacts: Path) -> Checker:
    return Checker(artifacts)


async def sign_in(page: Any, world: ConsoleWorld, email: str, password: str = PASSWORD) -> None:
    await page.goto(world.url("/console/sign-in"))
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_load_state()


async def go(page: Any, name: str) -> None:
    """Follow a link of the main menu."""
    await page.get_by_role("navigation", name="Main").get_by_role("link", name=name, exact=True).click()
    await page.wait_for_load_state()
