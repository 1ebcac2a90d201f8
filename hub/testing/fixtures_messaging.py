"""pytest fixtures for messaging: a real SMTP sink (aiosmtpd on 127.0.0.1, port 0)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from hub.testing.smtp import SmtpSink, make_self_signed_cert, server_tls_context


@pytest_asyncio.fixture
async def smtp_sink() -> AsyncIterator[SmtpSink]:
    """A plain SMTP sink in the test's event loop: ``smtp_sink.port``, ``.messages``,
    ``.reject[address] = "550 5.1.1 ..."``, ``await smtp_sink.wait_for(n)``."""
    sink = SmtpSink()
    await sink.start()
    try:
        yield sink
    finally:
        await sink.stop()


@pytest.fixture(scope="session")
def smtp_tls_cert(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """A self-signed (certificate, key) pair for 127.0.0.1, made once per session."""
    yield make_self_signed_cert(tmp_path_factory.mktemp("smtp-tls"))


@pytest_asyncio.fixture
async def smtp_tls_sink(smtp_tls_cert: tuple[Path, Path]) -> AsyncIterator[SmtpSink]:
    """An SMTP sink offering STARTTLS (required) and AUTH (user ``hub``, password ``s3cret``)."""
    cert, key = smtp_tls_cert
    sink = SmtpSink(
        tls_context=server_tls_context(cert, key),
        require_starttls=True,
        credentials={"hub": "s3cret"},
    )
    await sink.start()
    try:
        yield sink
    finally:
        await sink.stop()
