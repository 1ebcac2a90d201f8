"""A signed messaging link has one canonical spelling: the same bytes spelled another way
(padding, stray low bits in the last base64 character) are refused like a forgery."""

from __future__ import annotations

import base64
import string
from datetime import UTC, datetime

import pytest

from hub.messaging import links

SECRET = b"k" * 32
NOW = datetime(2026, 3, 2, tzinfo=UTC)
B64 = string.ascii_letters + string.digits + "-_"


def decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def other_spellings(part: str) -> list[str]:
    same = [part[:-1] + c for c in B64 if c != part[-1] and decode(part[:-1] + c) == decode(part)]
    return same + [part + "=", part + "=="]


@pytest.mark.parametrize("payload", [{"c": 1}, {"c": 12}, {"c": 123}])
def test_only_the_canonical_spelling_verifies(payload) -> None:
    token = links.sign(SECRET, "prefs", payload, None)
    assert links.verify(SECRET, "prefs", token, NOW) == payload
    body, mac = token.split(".")
    variants = [f"{b}.{mac}" for b in other_spellings(body)] + [f"{body}.{m}" for m in other_spellings(mac)]
    assert variants
    for variant in variants:
        with pytest.raises(links.BadToken):
            links.verify(SECRET, "prefs", variant, NOW)
