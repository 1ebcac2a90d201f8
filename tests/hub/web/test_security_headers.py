"""HTML pages cannot be framed or sniffed and do not leak their (token-carrying) URL; HSTS when
the hub's public URL is https."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer

from hub.web.app import create_app

PAGES = ["/account-request", "/set-password?token=abc", "/account-requests/1/complete?token=abc",
         "/switch-requests/1/respond?action=approve&expires=1&sig=x", "/account-requests/abc/complete?token=x",
         "/account-requests/99999999999999999999999/confirm?expires=1&sig=x",
         "/api/docs"]


async def serve(hub):
    client = TestClient(TestServer(create_app(hub, start_hub=False, run_workers=False), host="127.0.0.1", port=0))
    await client.start_server()
    return client


@pytest.mark.parametrize("https", [False, True], ids=["http", "https"])
async def test_security_headers(hub_factory, https) -> None:
    url = "https://hub.example.com" if https else "http://127.0.0.1:8080"
    hub = await hub_factory({"hub": {"public_url": url}})
    client = await serve(hub)
    try:
        for path in PAGES:
            r = await client.get(path)
            assert r.content_type == "text/html", path
            assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"], path
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert r.headers["Referrer-Policy"] == "no-referrer", path
            assert ("Strict-Transport-Security" in r.headers) is https
        r = await client.get("/api/openapi.json")
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert ("Strict-Transport-Security" in r.headers) is https
    finally:
        await client.close()
