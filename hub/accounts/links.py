"""Secrets in links: single-use tokens stored as hashes, and signed expiring response links."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import UTC, datetime

_CANONICAL_SIG = re.compile(r"[0-9a-f]{64}")
_CANONICAL_INT = re.compile(r"0|[1-9][0-9]{0,15}")


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


def parse_expires(value: str) -> int:
    """The one canonical spelling of a link's expiry: ASCII digits, no sign, no leading zero, so
    two different strings never carry the same signed link."""
    if not _CANONICAL_INT.fullmatch(value or ""):
        raise LinkError("bad_signature", "this link is not valid")
    return int(value)


def _check(expected: str, sig: str) -> None:
    # one canonical encoding: lower-case hex of the full digest, nothing else
    if not _CANONICAL_SIG.fullmatch(sig or "") or not hmac.compare_digest(expected, sig):
        raise LinkError("bad_signature", "this link is not valid")


def verify_response(key: str, switch_id: int, action: str, expires: int, sig: str, now: datetime) -> None:
    expected = hmac.new(key.encode(), _message(switch_id, action, expires), hashlib.sha256).hexdigest()
    _check(expected, sig)
    if now >= datetime.fromtimestamp(expires, UTC):
        raise LinkError("link_expired", "this link has expired: the response window is closed")


def _consent_message(request_id: int, practice_id: int, expires: int) -> bytes:
    return f"practice-consent:{request_id}:{practice_id}:{expires}".encode()


def sign_consent(key: str, request_id: int, practice_id: int, expires_at: datetime) -> tuple[int, str]:
    """Signature for the link that lets a known practice confirm an account with a new company."""
    expires = int(expires_at.timestamp())
    sig = hmac.new(key.encode(), _consent_message(request_id, practice_id, expires), hashlib.sha256).hexdigest()
    return expires, sig


def verify_consent(key: str, request_id: int, practice_id: int, expires: int, sig: str, now: datetime) -> None:
    expected = hmac.new(key.encode(), _consent_message(request_id, practice_id, expires),
                        hashlib.sha256).hexdigest()
    _check(expected, sig)
    if now >= datetime.fromtimestamp(expires, UTC):
        raise LinkError("link_expired", "this link has expired")
