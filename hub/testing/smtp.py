"""An SMTP sink (aiosmtpd) for testing email channels against a real SMTP server.

    sink = SmtpSink()                      # in the running event loop, port 0
    await sink.start()
    ... send to ("127.0.0.1", sink.port) ...
    msg = sink.messages[0].message         # email.message.EmailMessage (policy=default)
    await sink.stop()

Behaviour can be steered per recipient: ``sink.reject["bad@example.org"] = "550 5.1.1 No such
user"`` (a hard bounce) or ``"451 4.3.0 Try again later"`` (transient). ``sink.tls_context``
enables STARTTLS (or implicit TLS with ``implicit_tls=True``); ``sink.credentials`` enables AUTH.

:class:`ThreadedSmtpSink` runs the same sink in its own thread and event loop, for tests where
the code under test blocks the loop or runs in another process. ``python -m hub.testing.smtp``
runs a sink as a separate process (used by the SIGKILL test and the benchmark): it prints
``PORT <n>`` and, with ``--log FILE``, appends one line per received message (its Message-ID).
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import os
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import TextIO

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = [
    "ReceivedMail",
    "SmtpSink",
    "ThreadedSmtpSink",
    "make_self_signed_cert",
]


@dataclass
class ReceivedMail:
    """One message the SMTP sink received, with its envelope, AUTH login and whether TLS was on."""
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    peer: tuple
    auth_login: str | None = None
    tls: bool = False

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)  # type: ignore[return-value]


@dataclass
class _Handler:
    sink: SmtpSink

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list
    ) -> str:
        answer = self.sink.reject.get(address.lower())
        if answer:
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.sink.data_reply:
            return self.sink.data_reply
        data = envelope.original_content or envelope.content or b""
        if isinstance(data, str):
            data = data.encode()
        login = None
        auth = getattr(session, "auth_data", None)
        if isinstance(auth, LoginPassword):
            login = auth.login.decode()
        mail = ReceivedMail(
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            data=data,
            # aiosmtpd types Session.peer as str; it holds the transport's peername tuple.
            peer=session.peer,  # type: ignore[arg-type]
            auth_login=login if session.authenticated else None,
            tls=session.ssl is not None,
        )
        self.sink._received(mail)
        return "250 2.0.0 Message accepted"


class SmtpSink:
    """aiosmtpd on 127.0.0.1, port 0, inside the current event loop."""

    def __init__(
        self,
        *,
        tls_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        credentials: dict[str, str] | None = None,
        require_starttls: bool = False,
        log_file: Path | None = None,
        keep_messages: bool = True,
    ) -> None:
        self.tls_context = tls_context
        self.implicit_tls = implicit_tls
        self.credentials = credentials
        self.require_starttls = require_starttls
        self.log_file = log_file
        self.keep_messages = keep_messages
        self.messages: list[ReceivedMail] = []
        self.count = 0
        self.reject: dict[str, str] = {}
        self.data_reply: str | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._log: TextIO | None = None
        self._waiters: list[tuple[int, asyncio.Future, asyncio.AbstractEventLoop]] = []
        self.on_message: Callable[[ReceivedMail], None] | None = None

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if not isinstance(auth_data, LoginPassword) or self.credentials is None:
            return AuthResult(success=False, handled=False)
        user, password = auth_data.login.decode(), auth_data.password.decode()
        ok = self.credentials.get(user) == password
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    def _factory(self) -> SMTP:
        kwargs: dict = {
            "hostname": "sink.test",
            "decode_data": False,
            "data_size_limit": None,
        }
        if self.tls_context is not None and not self.implicit_tls:
            kwargs["tls_context"] = self.tls_context
            kwargs["require_starttls"] = self.require_starttls
        if self.credentials is not None:
            kwargs["authenticator"] = self._authenticate
            kwargs["auth_required"] = True
            kwargs["auth_require_tls"] = self.tls_context is not None
        return SMTP(_Handler(self), **kwargs)

    def _received(self, mail: ReceivedMail) -> None:
        self.count += 1
        if self.keep_messages:
            self.messages.append(mail)
        if self._log is not None:
            msgid = _message_id(mail.data)
            self._log.write(f"{msgid}\t{' '.join(mail.rcpt_tos)}\n")
            self._log.flush()
        if self.on_message is not None:
            self.on_message(mail)
        for waiter in list(self._waiters):
            count, fut, loop = waiter
            if self.count >= count and not fut.done():
                loop.call_soon_threadsafe(_set_result, fut)
                self._waiters.remove(waiter)

    async def start(self) -> SmtpSink:
        loop = asyncio.get_running_loop()
        if self.log_file is not None:
            self._log = open(self.log_file, "a", encoding="utf-8")  # noqa: ASYNC230 - test helper, closed in stop()
        self._server = await loop.create_server(
            self._factory,
            self.host,
            self.port,
            ssl=self.tls_context if self.implicit_tls else None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            try:
                await asyncio.wait_for(self._server.wait_closed(), 2)
            except TimeoutError:
                pass
            self._server = None
        if self._log is not None:
            self._log.close()
            self._log = None

    async def wait_for(self, count: int, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until at least ``count`` messages arrived (a deadline, not a sleep)."""
        if self.count >= count:
            return
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._waiters.append((count, fut, loop))
        await asyncio.wait_for(fut, timeout)

    async def __aenter__(self) -> SmtpSink:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    def by_recipient(self, address: str) -> list[ReceivedMail]:
        return [m for m in self.messages if address in m.rcpt_tos]


def _set_result(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


def _message_id(data: bytes) -> str:
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    for line in head.splitlines():
        if line[:11].lower() == b"message-id:":
            return line[11:].strip().decode(errors="replace")
    return "-"


class ThreadedSmtpSink(SmtpSink):
    """The same sink in its own thread and event loop."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start_sync(self) -> ThreadedSmtpSink:
        ready = threading.Event()
        loop = self._loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(SmtpSink.start(self))
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="smtp-sink", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("SMTP sink did not start")
        return self

    def stop_sync(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(SmtpSink.stop(self), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self._loop.close()
        self._loop = None

    def wait_count(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.count < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.count} of {count} messages arrived")
            time.sleep(0.01)


def make_self_signed_cert(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A throwaway certificate and key (openssl CLI) for STARTTLS/TLS tests."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", f"/CN={host}", "-addext", f"subjectAltName=IP:{host}",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run an SMTP sink on 127.0.0.1 (port 0).")
    parser.add_argument("--log", type=Path, help="append one line per message (Message-ID)")
    parser.add_argument("--port-file", type=Path, help="write the bound port here")
    args = parser.parse_args(argv)

    async def run() -> None:
        sink = SmtpSink(log_file=args.log, keep_messages=False)
        await sink.start()
        if args.port_file:
            tmp = Path(tempfile.mktemp(dir=args.port_file.parent))
            tmp.write_text(str(sink.port))  # noqa: ASYNC240 - once, at start-up
            os.replace(tmp, args.port_file)
        print(f"PORT {sink.port}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await sink.stop()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
