"""Token middleware for /api, the @public marker and role checks.

A route declared with ``auth_in_read=True`` (see :mod:`hub.web.contract`) has its token checked
by :func:`read_as_caller`, in the same hand-off to the database as the route's own read, instead
of a hand-off of its own before the handler runs. The middleware still guarantees what it
guarantees for every route: nothing the handler built is returned, and no error of the
handler's is told, before the token has been checked on this very request.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from aiohttp import web
from sqlalchemy.engine import Connection

from hub.auth import AuthError, Principal, authenticate_on
from hub.web.errors import ApiError
from hub.web.keys import HUB_KEY

T = TypeVar("T")

PRINCIPAL_KEY: web.RequestKey[Principal] = web.RequestKey("vethub_principal", Principal)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class PendingAuth:
    """A bearer token not checked yet: checked by the route's first read, or by the middleware
    once the handler is done, whichever comes first."""

    token: str
    now: datetime
    principal: Principal | None = None
    refused: ApiError | None = None


PENDING_KEY: web.RequestKey[PendingAuth] = web.RequestKey("vethub_pending_auth", PendingAuth)


def public(handler: Any) -> Any:
    """Mark an /api handler as open (no bearer token), e.g. a public request form's POST."""
    handler.vethub_public = True
    return handler


def _marked(request: web.Request, attr: str) -> bool:
    handler = request.match_info.handler
    target = getattr(handler, "__func__", handler)
    return bool(getattr(target, attr, False))


def is_public(request: web.Request) -> bool:
    return _marked(request, "vethub_public")


def _refusal(err: AuthError) -> ApiError:
    return ApiError(err.status, err.code, err.message)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/api") or is_public(request) or request.method == "OPTIONS":
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "missing_token", "this route needs `Authorization: Bearer <token>`")
    pending = PendingAuth(token.strip(), request.app[HUB_KEY].clock.now())
    if _marked(request, "vethub_auth_in_read"):
        return await _handle_pending(request, handler, pending)
    await _settle(request, pending)
    return await handler(request)


async def _handle_pending(request: web.Request, handler: Handler, pending: PendingAuth) -> web.StreamResponse:
    """Run a handler that checks the token in its own read; check it here if it did not (a
    route that answered without reading, or failed before its read) before anything leaves."""
    request[PENDING_KEY] = pending
    try:
        response = await handler(request)
    except Exception:
        await _settle(request, pending)  # a refused token answers 401, not the handler's error
        raise
    await _settle(request, pending)
    return response


async def _settle(request: web.Request, pending: PendingAuth) -> None:
    """Check the token unless the route's read already did; a refusal raises 401/403."""
    if pending.refused is not None:
        raise pending.refused
    if pending.principal is None:
        try:
            # one hand-off to the read engine: a session costs several round trips per request
            pending.principal = await request.app[HUB_KEY].read(
                lambda conn: authenticate_on(conn, pending.token, pending.now))
        except AuthError as err:
            raise _refusal(err) from err
        request[PRINCIPAL_KEY] = pending.principal


async def read_as_caller(request: web.Request, fn: Callable[[Connection, Principal], T]) -> T:
    """``fn(connection, principal)`` in one :meth:`hub.core.Hub.read`; on a route declared with
    ``auth_in_read=True``, the token is checked first in that same hand-off, and a refused
    token raises (401/403) before ``fn`` reads anything. Elsewhere, the middleware's principal.

    Nothing is cached: the token, its user and its practice are read on every request."""
    hub = request.app[HUB_KEY]
    pending = request.get(PENDING_KEY)
    if pending is None or pending.principal is not None:
        principal = get_principal(request)
        return await hub.read(lambda conn: fn(conn, principal))
    checked = pending

    def run(conn: Connection) -> T:
        try:
            checked.principal = authenticate_on(conn, checked.token, checked.now)
        except AuthError as err:
            checked.refused = _refusal(err)
            raise checked.refused from err
        return fn(conn, checked.principal)

    try:
        return await hub.read(run)
    finally:
        if checked.principal is not None:
            request[PRINCIPAL_KEY] = checked.principal


def client_address(request: web.Request) -> str:
    """The client's address for rate limits. ``X-Forwarded-For`` is believed only when the peer
    is one of ``[http] trusted_proxies``: then the rightmost address that is not itself a trusted
    proxy is the client (anything left of it was written by the client and may be forged)."""
    peer = request.remote or "unknown"
    hub = request.app[HUB_KEY]
    trusted = trusted_networks(tuple(getattr(hub.config.http, "trusted_proxies", ()) or ()))
    if not trusted or not _in(peer, trusted):
        return peer
    hops = [h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",") if h.strip()]
    for hop in reversed(hops):
        if not _in(hop, trusted):
            return hop
    return hops[0] if hops else peer


@functools.cache
def trusted_networks(entries: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(e, strict=False) for e in entries)


def _in(address: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def get_principal(request: web.Request) -> Principal:
    principal: Principal | None = request.get(PRINCIPAL_KEY)
    if principal is None:
        if PENDING_KEY in request:  # a bug, not the caller's: such a handler reads first
            raise RuntimeError(f"{request.path} checks its token in its read: call read_as_caller "
                               "before get_principal")
        raise ApiError(401, "missing_token", "this route needs a bearer token")
    return principal


def require_role(request: web.Request, *roles: str) -> Principal:
    principal = get_principal(request)
    if principal.role not in roles:
        raise ApiError(403, "forbidden", f"this needs the role {' or '.join(roles)}")
    return principal
