"""/readyz stays open, but only an operator token sees tenant names and provider error text."""

from __future__ import annotations

from typing import Any

from hub.hookspecs import hookimpl


class LeakyPlugin:
    @hookimpl
    def vethub_health_checks(self, hub: Any) -> dict[str, Any]:
        async def failing() -> tuple[bool, str]:
            raise ConnectionRefusedError("refused by pims.secret-clinic.example at 10.1.2.3")

        async def fine() -> tuple[bool, str]:
            return True, "last run succeeded for secret-clinic"

        return {"pims:secret-clinic/ezyvet": failing, "pims:other-clinic/file_export": fine}


async def test_readyz_names_no_tenant_without_an_operator_token(hub_factory: Any) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from hub.testing.fixtures_core import ApiClient
    from hub.web.app import create_app

    hub = await hub_factory(plugins=[("leaky", LeakyPlugin())])
    client = TestClient(TestServer(create_app(hub, start_hub=False, run_workers=False), host="127.0.0.1", port=0))
    await client.start_server()
    try:
        api = ApiClient(client, hub)
        for headers in ({}, {"Authorization": "Bearer vh_nope"}):
            r = await client.get("/readyz", headers=headers)
            text = await r.text()
            assert r.status == 503 and "secret-clinic" not in text and "10.1.2.3" not in text
            checks = (await r.json())["checks"]
            assert checks["pims"] == {"ok": False} and checks["database"] == {"ok": True}
            assert all(set(c) == {"ok"} for c in checks.values())
        op = await api.as_role("operator")
        body = await (await op.get("/readyz")).json()
        assert "10.1.2.3" in body["checks"]["pims:secret-clinic/ezyvet"]["detail"]
    finally:
        await client.close()
