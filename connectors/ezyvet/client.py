"""A thin async client for the ezyVet REST API (docs/providers/ezyvet.md).

It owns the wire protocol only: the client-credentials token, the ``meta``/``items`` envelope
with ``page``/``limit`` paging, JSON filters, ezyVet's ``messages`` error bodies, and retries of
429 and 5xx answers with tenacity, waiting as long as ``retry-after`` (or ``x-ratelimit-reset``)
says.

Tokens: one per (HTTP session, API host, partner, site), shared by every connector entry that
uses the same pair, because ezyVet may invalidate a partner's previous token when it grants a
new one. A token is renewed ``renew_before`` seconds before it expires and whenever the API
answers 401. Its lifetime is capped at 12 hours (ezyVet's documented lifetime); an
``expires_in`` above 10^9 is an absolute epoch time, as ezyVet's own example reads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

log = logging.getLogger(__name__)

MAX_LIMIT = 200
#: ezyVet's documented token lifetime; no token is kept longer, whatever ``expires_in`` says.
TOKEN_LIFETIME = timedelta(hours=12)
#: an ``expires_in`` above this is a point in time (epoch seconds), not a duration.
EPOCH_ABOVE = 1e9
#: what public multi-scope clients put between scopes.
SCOPE_SEPARATOR = ","


class EzyVetError(Exception):
    """ezyVet could not be read; the message says which call and why."""


class NotAvailable(EzyVetError):
    """The API answered 403 or 404 for a resource: not granted, or not offered by this site."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class RetryableError(EzyVetError):
    """A failure worth retrying (429, 5xx, no connection, timeout), with ezyVet's retry_after."""
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Credentials:
    """The OAuth client credentials and scopes ezyVet issued for one site."""
    client_id: str
    client_secret: str
    partner_id: str
    #: read scopes, e.g. ("read-contact", "read-animal"); a string is split on commas/spaces
    scope: tuple[str, ...] | str
    site_uid: str | None = None

    @property
    def scopes(self) -> tuple[str, ...]:
        return split_scopes(self.scope) if isinstance(self.scope, str) else tuple(self.scope)


def split_scopes(value: str) -> tuple[str, ...]:
    return tuple(s for s in re.split(r"[,\s]+", value) if s)


def join_scopes(scopes: tuple[str, ...] | list[str]) -> str:
    """The one place scopes are joined for the token request."""
    return SCOPE_SEPARATOR.join(dict.fromkeys(scopes))


def token_lifetime(expires_in: Any, now: datetime) -> timedelta:
    """How long a granted token may be used: ``expires_in`` seconds, or until the epoch time it
    names when above 10^9, never more than 12 hours."""
    value = float(expires_in)
    if value > EPOCH_ABOVE:
        left = datetime.fromtimestamp(value, UTC) - now
    else:
        left = timedelta(seconds=value)
    return max(min(left, TOKEN_LIFETIME), timedelta(0))


def error_text(body: Any) -> str:
    """The texts of an ezyVet ``{"messages": [{"level", "type", "text", "fields"}]}`` body."""
    if isinstance(body, dict) and isinstance(body.get("messages"), list):
        texts = [str(m.get("text") or m.get("type") or "") for m in body["messages"]
                 if isinstance(m, dict)]
        if any(texts):
            return "; ".join(t for t in texts if t)
    return ""


@dataclass
class _Token:
    value: str | None = None
    expires_at: datetime | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


#: tokens by HTTP session, then by (host, partner, site, client id): see the module docstring.
_TOKENS: weakref.WeakKeyDictionary[aiohttp.ClientSession, dict[tuple[str, ...], _Token]] = (
    weakref.WeakKeyDictionary())


def _shared_token(http: aiohttp.ClientSession, base: str, c: Credentials) -> _Token:
    key = (base, c.partner_id, c.site_uid or "", c.client_id)
    return _TOKENS.setdefault(http, {}).setdefault(key, _Token())


def retry_after_seconds(headers: Any, now: datetime) -> float | None:
    """How long the server asked us to wait: ``retry-after`` (seconds or an HTTP date), else
    ``x-ratelimit-reset`` (epoch seconds, or seconds when small) on a 429."""
    value = headers.get("retry-after")
    if value:
        try:
            return max(float(value), 0.0)
        except ValueError:
            try:
                return max((parsedate_to_datetime(value) - now).total_seconds(), 0.0)
            except (TypeError, ValueError):
                pass
    reset = headers.get("x-ratelimit-reset")
    if reset:
        try:
            seconds = float(reset)
        except ValueError:
            return None
        if seconds > 1e9:  # an epoch, not a delay
            seconds -= now.timestamp()
        return max(seconds, 0.0)
    return None


class EzyVetClient:
    """Talks to ezyVet's API: gets and renews tokens, pages through lists, honours rate limits."""
    def __init__(
        self,
        http: aiohttp.ClientSession,
        base_url: str,
        credentials: Credentials,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        renew_before: float = 300,
        max_attempts: int = 8,
        max_wait: float = 120,
        timeout: float = 30,
    ) -> None:
        self.http = http
        self._base = base_url.rstrip("/")
        self._credentials = credentials
        self._now = now
        self._renew_before = timedelta(seconds=renew_before)
        self._max_attempts = max_attempts
        self._max_wait = max_wait
        self._backoff = wait_random_exponential(multiplier=0.5, max=max_wait)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self.token_grants = 0

    @property
    def _slot(self) -> _Token:
        # Looked up each time: the connector hands each run's session to the same client.
        return _shared_token(self.http, self._base, self._credentials)

    # -- token ---------------------------------------------------------------------------
    async def token(self) -> str:
        slot = self._slot
        async with slot.lock:
            now = self._now()
            if slot.value and slot.expires_at and now < slot.expires_at - self._renew_before:
                return slot.value
            c = self._credentials
            body = {"client_id": c.client_id, "client_secret": c.client_secret,
                    "partner_id": c.partner_id, "scope": join_scopes(c.scopes),
                    "grant_type": "client_credentials"}
            if c.site_uid:
                body["site_uid"] = c.site_uid
            data = await self._send("POST", "/v1/oauth/access_token", json_body=body)
            try:
                value = str(data["access_token"])
                lifetime = token_lifetime(data["expires_in"], now)
            except (KeyError, TypeError, ValueError, OverflowError, OSError) as err:
                raise EzyVetError(f"ezyVet token response lacks access_token/expires_in: {data!r}") from err
            slot.value, slot.expires_at = value, now + lifetime
            self.token_grants += 1
            return value

    @property
    def token_expires_at(self) -> datetime | None:
        return self._slot.expires_at

    def forget_token(self, token: str | None = None) -> None:
        """Drop the shared token (only if it is still ``token``, when given: another entry may
        already have renewed it)."""
        slot = self._slot
        if token is None or slot.value == token:
            slot.value = slot.expires_at = None

    # -- requests ------------------------------------------------------------------------
    async def get(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        """GET a list endpoint, renewing the token once on 401."""
        for attempt in (1, 2):
            token = await self.token()
            try:
                return await self._send("GET", path, params=params, token=token)
            except _Unauthorized:
                self.forget_token(token)
                if attempt == 2:
                    raise EzyVetError(f"ezyVet refused a fresh token for GET {path} (401)") from None
        raise AssertionError("unreachable")

    async def pages(
        self, path: str, filters: dict[str, Any] | None = None, *, limit: int = MAX_LIMIT,
        start_page: int = 1,
    ) -> AsyncIterator[tuple[int, dict[str, Any], list[dict[str, Any]]]]:
        """Yield ``(page, meta, items)`` for every page from ``start_page``; items unwrapped."""
        params = {name: json.dumps(spec) if isinstance(spec, dict | list) else str(spec)
                  for name, spec in (filters or {}).items()}
        page = start_page
        while True:
            body = await self.get(path, {**params, "page": str(page), "limit": str(limit)})
            try:
                meta = body["meta"]
                items = [next(iter(wrapped.values())) if isinstance(wrapped, dict) and wrapped
                         else wrapped for wrapped in body["items"]]
                total_pages = int(meta.get("items_page_total") or 1)
            except (KeyError, TypeError, ValueError) as err:
                raise EzyVetError(f"ezyVet GET {path}: not a meta/items envelope") from err
            yield page, meta, items
            if page >= total_pages or not items:
                return
            page += 1

    async def all_items(self, path: str, filters: dict[str, Any] | None = None,
                        ) -> list[dict[str, Any]]:
        return [item async for _p, _m, items in self.pages(path, filters) for item in items]

    async def _send(self, method: str, path: str, *, params: dict[str, str] | None = None,
                    json_body: dict[str, Any] | None = None,
                    token: str | None = None) -> dict[str, Any]:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(RetryableError),
            wait=self._wait,
            stop=stop_after_attempt(self._max_attempts),
            reraise=True,
            before_sleep=self._log_retry,
        )
        async for attempt in retrying:
            with attempt:
                return await self._once(method, path, params, json_body, token)
        raise AssertionError("unreachable")

    async def _once(self, method: str, path: str, params: dict[str, str] | None,
                    json_body: dict[str, Any] | None, token: str | None) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        url = self._base + path
        try:
            async with self.http.request(method, url, params=params, json=json_body,
                                          headers=headers, timeout=self._timeout) as resp:
                if resp.status == 401 and token:
                    raise _Unauthorized()
                if resp.status == 429 or resp.status >= 500:
                    wait = retry_after_seconds(resp.headers, self._now())
                    raise RetryableError(f"ezyVet {method} {path}: HTTP {resp.status}", wait)
                if resp.status >= 400:
                    raw = await resp.text()
                    try:
                        text = error_text(json.loads(raw)) or raw[:300]
                    except ValueError:
                        text = raw[:300]
                    message = f"ezyVet {method} {path}: HTTP {resp.status}: {text}"
                    if resp.status in (403, 404) and token:
                        raise NotAvailable(message, resp.status)
                    raise EzyVetError(message)
                try:
                    return await resp.json(content_type=None)
                except ValueError as err:
                    raise EzyVetError(f"ezyVet {method} {path}: body is not JSON") from err
        except (aiohttp.ClientConnectionError, TimeoutError) as err:
            raise RetryableError(f"ezyVet {method} {path}: {err!r}") from err

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RetryableError) and exc.retry_after is not None:
            return min(exc.retry_after, self._max_wait)
        return self._backoff(state)

    @staticmethod
    def _log_retry(state: RetryCallState) -> None:
        if state.attempt_number == 1:  # once per failing call, not per retry
            exc = state.outcome.exception() if state.outcome else None
            log.warning("%s; retrying", exc)


class _Unauthorized(Exception):
    pass
