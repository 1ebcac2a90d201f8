"""Every route of the app, taken from its route table (a new route is covered without editing
this file), against out-of-range ids, unknown and out-of-range body fields and oversized bodies:
answers are 4xx in the documented JSON envelope under /api, never a 500, and nothing is stored."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote

from sqlalchemy import func, select

from hub.db.models import AuditEntry
from hub.web.contract import endpoint_of

BAD_IDS = ["99999999999999999999999", "2147483648", "6389452130", "abc", " 7", "\u0663", "-1", "0", "1.5", "1e3"]
BIG = 10**23


def routes(app: Any) -> list[tuple[str, str, Any]]:
    found = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("formatter") or info.get("path")
        if path and route.method not in ("HEAD", "OPTIONS", "*"):
            found.append((route.method, path, endpoint_of(route.handler)))
    return found


def fill(path: str, value: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda _m: quote(value, safe=""), path)


async def check_envelope(path: str, r: Any) -> None:
    assert r.status < 500, (path, r.status, await r.text())
    if path.startswith("/api") and r.status >= 400:
        body = await r.json()
        assert set(body["error"]) == {"code", "message", "field"}, (path, body)


async def audit_rows(hub: Any) -> int:
    async with hub.sessionmaker() as s:
        return (await s.execute(select(func.count()).select_from(AuditEntry))).scalar()


async def test_bad_ids_in_paths(api: Any) -> None:
    op = await api.as_role("operator")
    table = [r for r in routes(api.client.server.app) if "{" in r[1]]
    assert len(table) >= 15
    for method, path, _ep in table:
        for bad in BAD_IDS:
            url = fill(path, bad)
            r = await op.client.request(method, url, headers=op.headers,
                                        data=b"{}" if method != "GET" else None,
                                        allow_redirects=False)
            await check_envelope(url, r)
            if path.startswith("/api"):
                assert r.status >= 400, (method, url, r.status)


async def test_declared_bodies_refuse_unknown_big_and_oversized_input(api: Any) -> None:
    op = await api.as_role("operator")
    before = await audit_rows(api.hub)
    declared = [(m, p, ep) for m, p, ep in routes(api.client.server.app) if ep is not None and ep.body is not None]
    assert len(declared) >= 10
    for method, path, ep in declared:
        url = fill(path, "1")
        send = op.client.request
        # an unknown field, named
        r = await send(method, url, headers=op.headers, json={"zz_not_a_field": 1})
        await check_envelope(url, r)
        assert r.status == 422 and (await r.json())["error"]["field"] == "zz_not_a_field", (url, await r.text())
        # every known field given an integer no column holds
        for name in ep.body.model_fields:
            alias = ep.body.model_fields[name].alias or name
            r = await send(method, url, headers=op.headers, json={alias: BIG})
            await check_envelope(url, r)
            assert 400 <= r.status < 500, (url, alias, r.status)
        # a body over the route's limit
        r = await send(method, url, headers={**op.headers, "Content-Type": "application/json"},
                       data=json.dumps({"zz": "x" * (ep.max_body + 1)}).encode())
        await check_envelope(url, r)
        assert r.status == 413 and (await r.json())["error"]["code"] == "too_large", (url, r.status)
    assert await audit_rows(api.hub) == before


async def test_public_account_request_is_small(api: Any) -> None:
    r = await api.post("/api/account-requests", json={"practice_name": "x" * 12_000_000})
    assert r.status == 413 and (await r.json())["error"]["code"] == "too_large"
    r = await api.post("/api/account-requests", json={"practice_name": "x" * 201})
    assert r.status == 422 and (await r.json())["error"]["field"] == "practice_name"
    r = await api.post("/account-request", data={"practice_name": "x" * 12_000})
    assert r.status == 413
    r = await api.post("/account-request", data={"practice_name": "x" * 201})
    assert r.status == 422 and "practice_name" in await r.text()
    assert await audit_rows(api.hub) == 0
