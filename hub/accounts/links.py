"""Secrets in links: single-use tokens stored as hashes, and signed expiring response links."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime


def new_secret() -> tuple[str, str]:
    """A URL-safe secret and the SHA-256 hex digest that is stored instead of it."""
    token = secrets.token_urlsafe(32)
    return token, hash_secret(token)


def hash_secret(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _message(switch_id: int, action: str, expires: int) -> bytes:
    return f"switch-response:{switch_id}:{action}:{expires}".encode()


def sign_response(key: str, switch_id: int, action: str, expires_at: datetime) -> tuple[int, str]:
    """Signature for the current company's approve/object link; the link expires at the deadline."""
    expires = int(expires_at.timestamp())
    sig = hmac.new(key.encode(), _message(switch_id, action, expires), hashlib.sha256).hexdigest()
    return expires, sig


class LinkError(ValueError):
    """A response link that is forged, altered or expired; ``code`` says which."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def verify_response(key: str, switch_id: int, action: str, expires: int, sig: str, now: datetime) -> None:
    expected = hmac.new(key.encode(), _message(switch_id, action, expires), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, sig or ""):
        raise LinkError("bad_signature", "this link is not valid")
    if now >= datetime.fromtimestamp(expires, UTC):
        raise LinkError("link_expired", "this link has expired: the response window is closed")
