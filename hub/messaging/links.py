"""Signed, expiring links: the preference page, one-click unsubscribe, open/click tracking.

A token is ``<base64url(JSON payload)>.<base64url(HMAC-SHA256)>``, keyed with the hub secret
(``[hub] secret_key``) and bound to a purpose, so a tracking token cannot open the preference
page. Payloads carry an expiry (``e``, epoch seconds). No state is stored: rotating the secret
revokes every link.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from hub.core import Hub


class BadToken(ValueError):
    """Forged, malformed, for another purpose, or expired."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def secret_of(hub: Hub) -> bytes:
    return hub.config.hub.secret_key.get_secret_value().encode()


def sign(secret: bytes, purpose: str, payload: dict[str, Any], expires: datetime | None) -> str:
    data = dict(payload)
    if expires is not None:
        data["e"] = int(expires.timestamp())
    body = _b64(json.dumps(data, separators=(",", ":"), sort_keys=True).encode())
    mac = hmac.new(secret, f"{purpose}.{body}".encode(), hashlib.sha256).digest()[:18]
    return f"{body}.{_b64(mac)}"


def verify(secret: bytes, purpose: str, token: str, now: datetime) -> dict[str, Any]:
    try:
        body, mac = token.split(".", 1)
        if _b64(_unb64(body)) != body or _b64(_unb64(mac)) != mac:
            # one canonical spelling per token: no padding, no stray bits, no second form
            raise BadToken("malformed token")
        expected = hmac.new(secret, f"{purpose}.{body}".encode(), hashlib.sha256).digest()[:18]
        if not hmac.compare_digest(_unb64(mac), expected):
            raise BadToken("bad signature")
        data = json.loads(_unb64(body))
    except BadToken:
        raise
    except Exception as err:  # malformed base64/JSON: the same answer as a forgery
        raise BadToken("malformed token") from err
    if not isinstance(data, dict):
        raise BadToken("malformed token")
    if "e" in data and now.timestamp() > data["e"]:
        raise BadToken("expired")
    return data


# --- single-use links kept out of storage ---------------------------------------------------------
#
# A set-password or completion link must work once, for its recipient only. The hub stores the
# SHA-256 of its token (to check it) and, in the stored copy of the message, a *sealed* marker
# ``sealed.<kind>.<arg>`` in the token's place; the real token is HMAC(secret_key, kind, arg) and
# is put back only into the message handed to the channel at send time. A copy of the database
# alone therefore holds no usable link.

_SEALED = re.compile(r"sealed\.([a-z]{2})\.([A-Za-z0-9_-]{1,64})")


def single_use_token(secret: bytes, kind: str, arg: str) -> str:
    return _b64(hmac.new(secret, f"single-use.{kind}.{arg}".encode(), hashlib.sha256).digest())


def sealed(kind: str, arg: str) -> str:
    """The marker stored in place of the token ``single_use_token(secret, kind, arg)``."""
    marker = f"sealed.{kind}.{arg}"
    if not _SEALED.fullmatch(marker):
        raise ValueError(f"not a sealable kind/arg: {kind!r}, {arg!r}")
    return marker


def unseal(secret: bytes, text: str | None) -> str | None:
    """``text`` with every sealed marker replaced by its real token (for the recipient only)."""
    if not text or "sealed." not in text:
        return text
    return _SEALED.sub(lambda m: single_use_token(secret, m.group(1), m.group(2)), text)


def public_url(hub: Hub, path: str) -> str:
    return hub.config.hub.public_url.rstrip("/") + path


def url_quote(token: str) -> str:
    return quote(token, safe=".-_")
