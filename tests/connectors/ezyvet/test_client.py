"""The ezyVet client's token handling and retry waits, against the fake server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import aiohttp

from connectors.ezyvet.client import Credentials, EzyVetClient, retry_after_seconds
from hub.clock import FrozenClock


async def test_token_is_cached_and_renewed_before_expiry(fake_ezyvet) -> None:
    fake_ezyvet.token_ttl = 3600
    clock = FrozenClock(datetime.now(UTC))
    async with aiohttp.ClientSession() as http:
        client = EzyVetClient(http, fake_ezyvet.base_url,
                              Credentials(fake_ezyvet.client_id, fake_ezyvet.client_secret,
                                          fake_ezyvet.partner_id, "read-contact"),
                              now=clock.now, renew_before=300)
        await client.get("/v1/contact", {})
        await client.get("/v1/contact", {})
        assert fake_ezyvet.token_requests == 1
        clock.advance(seconds=3600 - 299)  # inside the renewal window, not yet expired
        await client.get("/v1/contact", {})
        assert fake_ezyvet.token_requests == 2
        assert not [r for r in fake_ezyvet.requests if r[1] == "/v1/contact"][3:]


async def test_401_renews_once(fake_ezyvet) -> None:
    async with aiohttp.ClientSession() as http:
        client = EzyVetClient(http, fake_ezyvet.base_url,
                              Credentials(fake_ezyvet.client_id, fake_ezyvet.client_secret,
                                          fake_ezyvet.partner_id, "read-contact"))
        await client.get("/v1/contact", {})
        fake_ezyvet.expire_tokens()
        body = await client.get("/v1/contact", {})
        assert body["meta"]["items_total"] == 0
        assert fake_ezyvet.token_requests == 2


def test_retry_after_headers() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after_seconds({"retry-after": "7"}, now) == 7
    assert retry_after_seconds({"retry-after": "Thu, 01 Jan 2026 00:00:30 GMT"}, now) == 30
    reset = int((now + timedelta(seconds=12)).timestamp())
    assert retry_after_seconds({"x-ratelimit-reset": str(reset)}, now) == 12
    assert retry_after_seconds({}, now) is None


async def test_fake_filters_and_paging(fake_ezyvet) -> None:
    for i in range(7):
        fake_ezyvet.add_contact(f"F{i}", "Smith" if i % 2 else "Jones")
    async with aiohttp.ClientSession() as http:
        client = EzyVetClient(http, fake_ezyvet.base_url,
                              Credentials(fake_ezyvet.client_id, fake_ezyvet.client_secret,
                                          fake_ezyvet.partner_id, "read-contact"))
        pages = [(p, m["items_page_total"], len(items)) async for p, m, items in
                 client.pages("/v1/contact", {"last_name": {"like": "Sm%"}}, limit=2)]
        assert pages == [(1, 2, 2), (2, 2, 1)]
        first_ids = sorted(fake_ezyvet.tables["contact"])[:2]
        ids = [c["id"] async for _p, _m, items in client.pages("/v1/contact",
                                                                {"id": {"in": first_ids}})
               for c in items]
        assert ids == first_ids
        first = fake_ezyvet.tables["contact"][first_ids[0]]["modified_at"]
        fake_ezyvet.advance(10)
        fake_ezyvet.update("contact", sorted(fake_ezyvet.tables["contact"])[2], first_name="Changed")
        changed = await client.all_items("/v1/contact", {"modified_at": {"gt": str(first)}})
        assert [c["first_name"] for c in changed] == ["Changed"]


async def test_retry_waits_as_long_as_the_server_asks(fake_ezyvet) -> None:
    import time

    async with aiohttp.ClientSession() as http:
        client = EzyVetClient(http, fake_ezyvet.base_url,
                              Credentials(fake_ezyvet.client_id, fake_ezyvet.client_secret,
                                          fake_ezyvet.partner_id, "read-contact"), max_wait=5)
        await client.token()
        fake_ezyvet.throttle(1, retry_after=1)
        started = time.monotonic()
        await client.get("/v1/contact", {})
        assert time.monotonic() - started >= 1.0


async def test_fake_rate_limit_window_headers(fake_ezyvet) -> None:
    fake_ezyvet.rate_limit = 2
    async with aiohttp.ClientSession() as http:
        client = EzyVetClient(http, fake_ezyvet.base_url,
                              Credentials(fake_ezyvet.client_id, fake_ezyvet.client_secret,
                                          fake_ezyvet.partner_id, ("read-contact", "read-animal")))
        headers = {"Authorization": f"Bearer {await client.token()}"}
        statuses = []
        for _ in range(3):
            async with http.get(fake_ezyvet.base_url + "/v1/contact", headers=headers) as resp:
                statuses.append((resp.status, resp.headers["x-ratelimit-remaining"]))
                last = resp.headers
        assert statuses == [(200, "1"), (200, "0"), (429, "0")]
        assert 0 < int(last["retry-after"]) <= 60
        assert int(last["x-ratelimit-reset"]) > fake_ezyvet.now()
        # Another endpoint has its own window.
        async with http.get(fake_ezyvet.base_url + "/v1/animal", headers=headers) as resp:
            assert resp.status == 200
