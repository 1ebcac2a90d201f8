"""pytest fixtures for the SMS and postcard channels: fake Twilio and Lob servers.

``fake_twilio`` and ``fake_lob`` are real HTTP servers on 127.0.0.1 (port 0) in the test's event
loop. ``sms_config(fake_twilio)`` and ``postcard_config(fake_lob)`` give the ``[sms]`` and
``[postcard]`` sections pointing at them, ready to pass to ``make_config`` (or to write into a
vendor plugin's own config)::

    async def test_my_sms(make_config, fake_twilio, sms_config):
        config = make_config(sms=sms_config(fake_twilio))
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from hub.testing.fake_lob import FakeLob
from hub.testing.fake_twilio import FakeTwilio

#: The sender number the SMS config uses (Twilio's magic "valid" test number).
TWILIO_FROM = "+15005550006"
#: A valid US return address for postcards.
RETURN_ADDRESS = {"name": "Riverside Vets", "address_line1": "100 Main St",
                  "address_city": "Springfield", "address_state": "IL", "address_zip": "62701"}


@pytest_asyncio.fixture
async def fake_twilio() -> AsyncIterator[FakeTwilio]:
    """A fake Twilio Messages API (docs/providers/twilio.md): ``.base_url``, ``.account_sid``,
    ``.auth_token``, ``.messages``, ``.requests``, ``.fail_next()``, ``.send_status()``,
    ``.send_inbound()``."""
    async with FakeTwilio() as server:
        yield server


@pytest_asyncio.fixture
async def fake_lob() -> AsyncIterator[FakeLob]:
    """A fake Lob postcards API (docs/providers/lob.md): ``.base_url`` (ends in /v1), ``.api_key``,
    ``.webhook_secret``, ``.postcards``, ``.requests``, ``.fail_next()``,
    ``.rate_limit_next()``, ``.send_event()``."""
    async with FakeLob() as server:
        yield server


@pytest.fixture
def sms_config() -> Callable[..., dict[str, Any]]:
    """``sms_config(fake_twilio, **overrides)`` → an ``[sms]`` section for that server."""

    def build(server: FakeTwilio, **overrides: Any) -> dict[str, Any]:
        section = {"account_sid": server.account_sid, "auth_token": server.auth_token,
                   "from_number": TWILIO_FROM, "base_url": server.base_url}
        section.update(overrides)
        return section

    return build


@pytest.fixture
def postcard_config() -> Callable[..., dict[str, Any]]:
    """``postcard_config(fake_lob, **overrides)`` → a ``[postcard]`` section for that server."""

    def build(server: FakeLob, **overrides: Any) -> dict[str, Any]:
        section = {"api_key": server.api_key, "base_url": server.base_url,
                   "webhook_secret": server.webhook_secret,
                   "from_address": dict(RETURN_ADDRESS)}
        section.update(overrides)
        return section

    return build
