"""Readiness reports every plugin's health check; one failing check makes the hub not ready."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from hub.hookspecs import hookimpl
from hub.web.app import create_app


class PartnerPlugin:
    def __init__(self, ok: bool) -> None:
        self.ok = ok

    @hookimpl
    def vethub_health_checks(self, hub: Any) -> dict[str, Any]:
        async def partner() -> tuple[bool, str]:
            if not self.ok:
                raise ConnectionRefusedError("partner API refused the connection")
            return True, "reachable"

        return {"partner:api": partner}


async def readyz(hub: Any) -> tuple[int, dict[str, Any]]:
    """/readyz as an operator sees it (anyone else sees ok per kind of check, no detail)."""
    from hub.auth import issue_token

    async with hub.transaction() as session:
        token, _ = await issue_token(session, role="operator", name="test")
    client = TestClient(TestServer(create_app(hub, start_hub=False, run_workers=False), host="127.0.0.1", port=0))
    await client.start_server()
    try:
        response = await client.get("/readyz", headers={"Authorization": f"Bearer {token}"})
        return response.status, await response.json()
    finally:
        await client.close()


async def test_plugin_health_checks_feed_readyz(hub_factory: Any) -> None:
    plugin = PartnerPlugin(ok=True)
    hub = await hub_factory(plugins=[("partner", plugin)])
    status, body = await readyz(hub)
    assert status == 200 and body["checks"]["partner:api"] == {"ok": True, "detail": "reachable"}

    plugin.ok = False
    status, body = await readyz(hub)
    assert status == 503 and body["ready"] is False
    assert "refused" in body["checks"]["partner:api"]["detail"]
    assert body["checks"]["database"]["ok"] is True
