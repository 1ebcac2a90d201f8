"""pytest fixtures for PIMS connectors: the fake ezyVet server and a practice drop folder.

- ``fake_ezyvet``: a started :class:`~hub.testing.fake_ezyvet.FakeEzyVet` on a loopback port.
- ``ezyvet_entry(fake, **keys)``: a ``[[practices.pims]]`` table pointing at it.
- ``pims_practice(pims=[...], slug="oak", country="US")``: a practice config mapping.
- ``drop_dir``: an empty drop folder for the file-export connector.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from hub.testing.fake_ezyvet import FakeEzyVet


@pytest_asyncio.fixture
async def fake_ezyvet() -> AsyncIterator[FakeEzyVet]:
    async with FakeEzyVet() as server:
        yield server


@pytest.fixture
def ezyvet_entry() -> Callable[..., dict[str, Any]]:
    def build(server: FakeEzyVet, **keys: Any) -> dict[str, Any]:
        return {"connector": "ezyvet", "base_url": server.base_url, "client_id": server.client_id,
                "client_secret": server.client_secret, "partner_id": server.partner_id,
                "max_wait_seconds": 0.05, **keys}

    return build


@pytest.fixture
def pims_practice() -> Callable[..., dict[str, Any]]:
    def build(pims: list[dict[str, Any]], slug: str = "oak", country: str = "US",
              **extra: Any) -> dict[str, Any]:
        return {"slug": slug, "name": f"{slug.title()} Veterinary", "country": country,
                "pims": pims, **extra}

    return build


@pytest.fixture
def drop_dir(tmp_path: Path) -> Path:
    path = tmp_path / "drop"
    path.mkdir()
    return path
