"""The served spec is usable by someone who never saw the code: a standard generator
(openapi-python-client) builds a Python client from it, and that client talks to the hub."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

GENERATOR = Path(sys.executable).with_name("openapi-python-client")

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]


@pytest.fixture
def generated_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    def generate(spec: dict[str, Any]) -> Any:
        (tmp_path / "openapi.json").write_text(json.dumps(spec), encoding="utf-8")
        out = tmp_path / "vethub_sdk"
        result = subprocess.run(
            [str(GENERATOR), "generate", "--path", str(tmp_path / "openapi.json"), "--meta", "none",
             "--output-path", str(out)],
            capture_output=True, text=True, timeout=300,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        monkeypatch.syspath_prepend(str(tmp_path))
        return importlib.import_module("vethub_sdk")

    yield generate
    for name in [m for m in sys.modules if m == "vethub_sdk" or m.startswith("vethub_sdk.")]:
        del sys.modules[name]


async def test_generated_client_lists_practices(db_url: str, api: Any, generated_client: Any) -> None:
    spec = await (await api.get("/api/openapi.json")).json()
    sdk = generated_client(spec)
    from vethub_sdk.api.core import get_practice, list_practices, whoami  # type: ignore[import-not-found]

    operator = await api.as_role("operator")
    token = operator.headers["Authorization"].split()[1]
    client = sdk.AuthenticatedClient(base_url=str(api.make_url("")).rstrip("/"), token=token)
    async with client:
        me = await whoami.asyncio(client=client)
        assert me.role == "operator"
        practices = await list_practices.asyncio(client=client)
        assert [p.slug for p in practices.items] == []  # nothing seeded in this config
        missing = await get_practice.asyncio_detailed(client=client, id=404)
        assert missing.status_code == 404
        assert missing.parsed.error.code == "not_found"
    anonymous = sdk.Client(base_url=str(api.make_url("")).rstrip("/"))
    async with anonymous:
        refused = await whoami.asyncio_detailed(client=anonymous)
        assert refused.status_code == 401


async def test_generated_client_requests_an_account_and_lists_accounts(
        db_url: str, hub_factory: Any, generated_client: Any) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from hub.web.app import create_app

    hub = await hub_factory({"companies": [{"slug": "rads", "name": "Rads", "email": "r@rads.example",
                                            "modalities": ["CT"]}]})
    server = TestClient(TestServer(create_app(hub, start_hub=False, run_workers=False), port=0))
    await server.start_server()
    try:
        from hub.testing.fixtures_core import ApiClient

        spec = await (await server.get("/api/openapi.json")).json()
        sdk = generated_client(spec)
        from vethub_sdk.api.accounts import (  # type: ignore[import-not-found]
            create_account_request,
            list_account_requests,
            list_accounts,
        )
        from vethub_sdk.models import AccountRequestFields  # type: ignore[import-not-found]

        base = str(server.make_url("")).rstrip("/")
        async with sdk.Client(base_url=base) as anonymous:  # the public request form's route
            made = await create_account_request.asyncio_detailed(client=anonymous, body=AccountRequestFields(
                company="rads", practice_name="Oak Vets", contact_name="Ada Oak", email="ada@oak.example"))
            assert made.status_code == 201, made.content
            bad = await create_account_request.asyncio_detailed(client=anonymous, body=AccountRequestFields(
                company="no-such-company", practice_name="Elm Vets", email="e@elm.example"))
            assert bad.status_code in (404, 422) and b"error" in bad.content

        operator = await ApiClient(server, hub).as_role("operator")
        token = operator.headers["Authorization"].split()[1]
        async with sdk.AuthenticatedClient(base_url=base, token=token) as client:
            requests = await list_account_requests.asyncio_detailed(client=client)
            assert requests.status_code == 200 and b"Oak Vets" in requests.content
            accounts = await list_accounts.asyncio_detailed(client=client)
            assert accounts.status_code == 200 and b"items" in accounts.content
    finally:
        await server.close()
