"""Token middleware for /api, the @public marker and role checks."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from hub.auth import AuthError, Principal, authenticate_on
from hub.web.errors import ApiError
from hub.web.keys import HUB_KEY

PRINCIPAL_KEY: web.RequestKey[Principal] = web.RequestKey("vethub_principal", Principal)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def public(handler: Any) -> Any:
    """Mark an /api handler as open (no bearer token), e.g. a public request form's POST."""
    handler.vethub_public = True
    return handler


def is_public(request: web.Request) -> bool:
    handler = request.match_info.handler
    target = getattr(handler, "__func__", handler)
    return bool(getattr(target, "vethub_public", False))


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/api") or is_public(request) or request.method == "OPTIONS":
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "missing_token", "this route needs `Authorization: Bearer <token>`")
    hub = request.app[HUB_KEY]
    token, now = token.strip(), hub.clock.now()
    try:
        # one hand-off to the read engine: a session costs several round trips per request
        principal = await hub.read(lambda conn: authenticate_on(conn, token, now))
    except AuthError as err:
        raise ApiError(err.status, err.code, err.message) from err
    request[PRINCIPAL_KEY] = principal
    return await handler(request)


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
        raise ApiError(401, "missing_token", "this route needs a bearer token")
    return principal


def require_role(request: web.Request, *roles: str) -> Principal:
    principal = get_principal(request)
    if principal.role not in roles:
        raise ApiError(403, "forbidden", f"this needs the role {' or '.join(roles)}")
    return principal
