"""Security headers on every response: pages may not be framed, sniffed or leak their URL.

- every response: ``X-Content-Type-Options: nosniff``; ``Strict-Transport-Security`` when
  ``[hub] public_url`` is https (the hub is then only reached over TLS, by its proxy or itself);
- HTML: a ``Content-Security-Policy`` (nothing from another origin, no scripts, no framing:
  ``frame-ancestors 'none'``), ``X-Frame-Options: DENY`` for older browsers, and
  ``Referrer-Policy: no-referrer`` — several pages carry a token in their URL (set-password,
  completion, preference, response links), which must not leave in a Referer header.
"""

from __future__ import annotations

from aiohttp import web

from hub.web.keys import HUB_KEY

CSP = ("default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; form-action 'self'; "
       "base-uri 'none'; frame-ancestors 'none'")
HSTS = "max-age=31536000"


async def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    if request.app[HUB_KEY].config.hub.public_url.lower().startswith("https://"):
        headers.setdefault("Strict-Transport-Security", HSTS)
    if headers.get("Content-Type", "").startswith("text/html"):
        headers.setdefault("Content-Security-Policy", CSP)
        headers.setdefault("X-Frame-Options", "DENY")
        headers["Referrer-Policy"] = "no-referrer"


def install(app: web.Application) -> None:
    app.on_response_prepare.append(_add_headers)
