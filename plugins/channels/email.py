"""Email channel over SMTP (aiosmtplib), and the message builder the Maildir channel shares.

Config lives in the ``[email]`` section (``backend = "smtp"`` selects this channel; the default
``"maildir"`` selects :mod:`plugins.channels.maildir`). See docs/messaging.md.

Building messages is where the CPU goes (docs/performance.md, as measured of the peers: ``EmailMessage`` + ``as_bytes()`` ~1 ms,
compat32 ``email.mime`` ~0.29 ms), so :class:`MimeBuilder` writes the few shapes the hub sends
(text, or multipart/alternative text + HTML) directly as bytes, using the stdlib encoders for
headers (RFC 2047) and bodies (quoted-printable). Tests parse the result with Python's email
parser.

SMTP answers: a 5xx to RCPT TO is a hard bounce (``ChannelError(reason="bounced",
permanent=True)``; the core marks the address invalid and raises an operator event). A 5xx to
MAIL FROM or DATA is a permanent rejection of the message, not of the address. 4xx answers,
authentication failures (an operator fixes the credentials) and connection errors are transient
and retried by the outbox.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import os
import ssl
import time
from collections.abc import Iterable
from email.header import Header
from email.utils import formataddr, formatdate
from pathlib import Path
from typing import Literal

import aiosmtplib
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from hub.hookspecs import hookimpl
from hub.messaging.channel import ChannelError, OutboundMessage, SendResult
from hub.messaging.statuses import CommStatus

log = logging.getLogger(__name__)

#: Headers DKIM signs when present. RFC 8058 requires List-Unsubscribe and
#: List-Unsubscribe-Post to be covered for receivers to offer one-click.
DKIM_HEADERS = (
    b"from",
    b"to",
    b"cc",
    b"subject",
    b"date",
    b"message-id",
    b"reply-to",
    b"mime-version",
    b"content-type",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
)


class EmailConfig(BaseModel):
    """``[email]``: how the hub sends email."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["maildir", "smtp"] = "maildir"
    from_address: str = "vethub@localhost"
    from_name: str = "VetHub"
    reply_to: str | None = None
    #: envelope sender (Return-Path) for bounces; defaults to from_address
    envelope_from: str | None = None
    #: domain in Message-IDs; defaults to the from_address domain
    message_id_domain: str | None = None
    #: mailbox for the mailto: List-Unsubscribe URI; defaults to from_address
    unsubscribe_mailto: str | None = None
    #: per-message VERP envelope sender bounces+<token>@verp_domain (docs/inbound-email.md)
    verp_domain: str | None = None
    #: with verp_domain: Reply-To reply+<token>@verp_domain, so replies find their message
    reply_tokens: bool = False

    # maildir backend
    maildir_path: str = "maildir"  # relative paths are under the hub's data_dir

    # smtp backend
    host: str = "localhost"
    port: int | None = None  # default 465 with tls = "tls", 587 with "starttls", 25 with "none"
    tls: Literal["none", "starttls", "tls"] = "starttls"
    validate_certs: bool = True
    ca_file: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    local_hostname: str | None = None
    timeout: float = 30.0
    #: concurrent SMTP connections kept open (one send per connection at a time)
    connections: int = Field(4, ge=1, le=64)
    #: close a pooled connection idle longer than this many seconds
    idle_timeout: float = 30.0

    # DKIM (optional; all three or none)
    dkim_domain: str | None = None
    dkim_selector: str | None = None
    dkim_private_key_path: str | None = None
    dkim_private_key: SecretStr | None = None

    @model_validator(mode="after")
    def _check(self) -> EmailConfig:
        if "@" not in self.from_address:
            raise ValueError("from_address must be an email address")
        has_key = bool(self.dkim_private_key_path or self.dkim_private_key)
        if any([self.dkim_domain, self.dkim_selector, has_key]) and not all(
            [self.dkim_domain, self.dkim_selector, has_key]
        ):
            raise ValueError(
                "DKIM needs dkim_domain, dkim_selector and dkim_private_key_path "
                "(or dkim_private_key) together"
            )
        return self

    @property
    def domain(self) -> str:
        return self.from_address.rpartition("@")[2]

    @property
    def smtp_port(self) -> int:
        if self.port:
            return self.port
        return {"tls": 465, "starttls": 587, "none": 25}[self.tls]

    def load_dkim_key(self, base: Path | None = None) -> bytes | None:
        if self.dkim_private_key is not None:
            return self.dkim_private_key.get_secret_value().encode()
        if self.dkim_private_key_path:
            path = Path(self.dkim_private_key_path)
            if not path.is_absolute() and base is not None:
                path = base / path
            return path.read_bytes()
        return None


# --------------------------------------------------------------------------- building


def _header(value: str) -> str:
    """An unstructured header value: as is when ASCII, else RFC 2047 encoded-words."""
    if value.isascii() and "\n" not in value and "\r" not in value:
        return value
    clean = value.replace("\r", " ").replace("\n", " ")
    return Header(clean, "utf-8", maxlinelen=76).encode(linesep="\r\n")


def _address(addr: str, name: str | None = None) -> str:
    if "\r" in addr or "\n" in addr:
        raise ValueError("newline in address")
    return formataddr((name, addr), charset="utf-8") if name else addr


def _qp(text: str) -> bytes:
    """UTF-8 quoted-printable body with CRLF line ends."""
    data = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    encoded = binascii.b2a_qp(data, quotetabs=False, istext=True, header=False)
    return encoded.replace(b"\n", b"\r\n")


def address_token(secret: bytes, purpose: str, communication_id: int) -> str:
    """``<id>-<mac>`` for a VERP or reply address: lower-case hex, since MTAs may fold the
    local part's case, and keyed with the hub secret so a bounce cannot be forged for a
    message the forger never saw."""
    mac = hmac.new(secret, f"{purpose}:{communication_id}".encode(), hashlib.sha256).hexdigest()
    return f"{communication_id}-{mac[:20]}"


def read_address_token(secret: bytes, purpose: str, token: str) -> int | None:
    """The communication id in a token made by :func:`address_token`, or None if forged."""
    ident, _, _ = token.partition("-")
    if not ident.isascii() or not ident.isdigit() or len(ident) > 18:
        return None
    if not hmac.compare_digest(address_token(secret, purpose, int(ident)), token.lower()):
        return None
    return int(ident)


class MimeBuilder:
    """Builds RFC 5322 bytes for an :class:`OutboundMessage` (~tens of µs, not ~1 ms)."""

    def __init__(self, config: EmailConfig, *, secret: bytes = b"") -> None:
        self.config = config
        self.from_header = _address(config.from_address, config.from_name)
        self.reply_to = _address(config.reply_to) if config.reply_to else None
        self.msgid_domain = config.message_id_domain or config.domain
        self._secret = secret or os.urandom(16)
        self._date_second = -1
        self._date = ""

    def message_id(self, message: OutboundMessage) -> str:
        """Deterministic per communication: a resend after a crash carries the same
        Message-ID, so receivers (and our status lookups) can tell it is the same mail."""
        digest = hashlib.blake2s(
            message.idempotency_key.encode(), key=self._secret[:32], digest_size=8
        ).hexdigest()
        return f"<{message.idempotency_key}.{digest}@{self.msgid_domain}>"

    def date(self) -> str:
        now = int(time.time())
        if now != self._date_second:
            self._date_second = now
            self._date = formatdate(now, usegmt=True)
        return self._date

    def build(self, message: OutboundMessage, message_id: str | None = None) -> bytes:
        if message.text is None and message.html is None:
            raise ChannelError("email has no body", reason="rejected", permanent=True)
        sender = message.sender
        from_header, reply_to = self.from_header, self.reply_to
        if sender is not None:
            # the practice's name on the hub's address, or the practice's own address
            from_header = _address(sender.from_address or self.config.from_address,
                                   sender.display_name)
            reply_to = _address(sender.reply_to) if sender.reply_to else reply_to
        lines = [
            "From: " + from_header,
            "To: " + _address(message.to),
        ]
        if message.cc:
            lines.append("Cc: " + ", ".join(_address(a) for a in message.cc))
        if self.config.verp_domain and self.config.reply_tokens:
            # a token the inbound plugin matches to this message; the practice sees the reply
            token = address_token(self._secret, "reply", message.communication_id)
            lines.append(f"Reply-To: reply+{token}@{self.config.verp_domain}")
        elif reply_to:
            lines.append("Reply-To: " + reply_to)
        lines.append("Subject: " + _header(message.subject or ""))
        lines.append("Date: " + self.date())
        lines.append("Message-ID: " + (message_id or self.message_id(message)))
        for name, value in message.headers.items():
            if "\r" in name or "\n" in name or ":" in name:
                raise ValueError(f"bad header name {name!r}")
            lines.append(f"{name}: {_header(value)}")
        lines.append("MIME-Version: 1.0")
        text, html = message.text, message.html
        if text is not None and html is not None:
            boundary = "=_vh_" + base64.b32encode(os.urandom(10)).decode().rstrip("=")
            lines.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
            head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
            b = boundary.encode()
            return b"".join(
                (
                    head,
                    b"--", b, b"\r\n",
                    b'Content-Type: text/plain; charset="utf-8"\r\n',
                    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n",
                    _qp(text), b"\r\n",
                    b"--", b, b"\r\n",
                    b'Content-Type: text/html; charset="utf-8"\r\n',
                    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n",
                    _qp(html), b"\r\n",
                    b"--", b, b"--\r\n",
                )
            )  # fmt: skip
        body, subtype = (text, "plain") if text is not None else (html, "html")
        lines.append(f'Content-Type: text/{subtype}; charset="utf-8"')
        lines.append("Content-Transfer-Encoding: quoted-printable")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
        return head + _qp(body or "") + b"\r\n"


class DkimSigner:
    """Signs with dkimpy, relaxed/relaxed, rsa-sha256, covering :data:`DKIM_HEADERS`."""

    def __init__(self, domain: str, selector: str, private_key: bytes) -> None:
        import dkim  # dkimpy; imported here so the channel loads without DKIM configured

        self._dkim = dkim
        self.domain = domain.encode()
        self.selector = selector.encode()
        self.key = private_key
        # fail at start-up, not on the first send, when the key is unusable
        dkim.crypto.parse_pem_private_key(private_key)

    def sign(self, data: bytes) -> bytes:
        signature = self._dkim.sign(
            data,
            self.selector,
            self.domain,
            self.key,
            canonicalize=(b"relaxed", b"relaxed"),
            # over-sign (RFC 6376 §8.15): listed once more than present, so a second copy added
            # in transit (another From, another unsubscribe target) breaks the signature
            include_headers=[*DKIM_HEADERS, b"from", b"list-unsubscribe", b"list-unsubscribe-post"],
        )
        return signature + data


# --------------------------------------------------------------------------- SMTP


def classify_smtp_error(exc: BaseException) -> ChannelError:
    """Map an aiosmtplib exception to a :class:`ChannelError`."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        worst = max(codes) if codes else 550
        text = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
        if worst >= 500:
            return ChannelError(f"recipient refused: {text}", reason="bounced", permanent=True, code=worst)
        return ChannelError(f"recipient deferred: {text}", reason="transient", permanent=False, code=worst)
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        # our credentials, not the message: keep retrying until an operator fixes them
        return ChannelError(f"SMTP authentication failed: {exc.code} {exc.message}", reason="transient", permanent=False, code=exc.code)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        if exc.code >= 500:
            return ChannelError(f"SMTP {exc.code} {exc.message}", reason="rejected", permanent=True, code=exc.code)
        return ChannelError(f"SMTP {exc.code} {exc.message}", reason="transient", permanent=False, code=exc.code)
    return ChannelError(f"SMTP connection problem: {type(exc).__name__}: {exc}", reason="transient", permanent=False)  # fmt: skip


class _Conn:
    __slots__ = ("smtp", "last_used")

    def __init__(self, smtp: aiosmtplib.SMTP) -> None:
        self.smtp = smtp
        self.last_used = time.monotonic()


class SmtpEmailChannel:
    """The ``email`` channel over SMTP with a small pool of persistent connections."""

    name = "email"

    def __init__(
        self, config: EmailConfig, *, secret: bytes = b"", dkim_key: bytes | None = None
    ) -> None:
        self.config = config
        self.builder = MimeBuilder(config, secret=secret)
        self.signer = (
            DkimSigner(config.dkim_domain or "", config.dkim_selector or "", dkim_key)
            if dkim_key
            else None
        )
        self.envelope_from = config.envelope_from or config.from_address
        self._practice_signers: dict[tuple[str, str, bytes], DkimSigner] = {}
        self._idle: list[_Conn] = []
        self._slots = asyncio.Semaphore(config.connections)
        self._closed = False

    # -- connections
    def _tls_context(self) -> ssl.SSLContext | None:
        if self.config.tls == "none":
            return None
        ctx = ssl.create_default_context(cafile=self.config.ca_file)
        if not self.config.validate_certs:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    async def _connect(self) -> _Conn:
        c = self.config
        smtp = aiosmtplib.SMTP(
            hostname=c.host,
            port=c.smtp_port,
            username=c.username,
            password=c.password.get_secret_value() if c.password else None,
            local_hostname=c.local_hostname,
            timeout=c.timeout,
            use_tls=c.tls == "tls",
            start_tls=True if c.tls == "starttls" else False,
            validate_certs=c.validate_certs,
            tls_context=self._tls_context(),
        )
        await smtp.connect()
        return _Conn(smtp)

    async def _acquire(self) -> _Conn:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.smtp.is_connected and now - conn.last_used < self.config.idle_timeout:
                return conn
            await self._discard(conn)
        return await self._connect()

    async def _discard(self, conn: _Conn) -> None:
        try:
            if conn.smtp.is_connected:
                await asyncio.wait_for(conn.smtp.quit(), 2)
        except Exception:  # noqa: BLE001 - a dying connection may fail any way it likes
            conn.smtp.close()

    # -- Channel protocol
    def render(self, message: OutboundMessage) -> tuple[str, bytes]:
        message_id = self.builder.message_id(message)
        data = self.builder.build(message, message_id)
        signer = self._signer_for(message)
        if signer is not None:
            data = signer.sign(data)
        return message_id, data

    def _signer_for(self, message: OutboundMessage) -> DkimSigner | None:
        """The practice's own DKIM key when it sends from its own domain, else the hub's."""
        s = message.sender
        if s is None or not (s.from_address and s.dkim_key and s.dkim_domain and s.dkim_selector):
            return self.signer
        key = (s.dkim_domain, s.dkim_selector, s.dkim_key)
        signer = self._practice_signers.get(key)
        if signer is None:
            signer = self._practice_signers[key] = DkimSigner(s.dkim_domain, s.dkim_selector,
                                                              s.dkim_key)
        return signer

    async def send(self, message: OutboundMessage) -> SendResult:
        message_id, data = self.render(message)
        recipients = [message.to, *message.cc]
        envelope_from = self.envelope_from
        if self.config.verp_domain:
            token = address_token(self.builder._secret, "verp", message.communication_id)
            envelope_from = f"bounces+{token}@{self.config.verp_domain}"
        async with self._slots:
            try:
                conn = await self._acquire()
            except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
                raise classify_smtp_error(exc) from exc
            if message.on_handed is not None:
                message.on_handed()  # on the wire from here: the hub's hand-off journal
            try:
                errors, reply = await conn.smtp.sendmail(envelope_from, recipients, data)
            except (aiosmtplib.SMTPRecipientsRefused, aiosmtplib.SMTPResponseException) as exc:
                # the envelope was reset; the connection is still good
                conn.last_used = time.monotonic()
                self._idle.append(conn)
                raise classify_smtp_error(exc) from exc
            except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
                await self._discard(conn)
                raise classify_smtp_error(exc) from exc
            except BaseException:
                await self._discard(conn)
                raise
            conn.last_used = time.monotonic()
            if self._closed:
                await self._discard(conn)
            else:
                self._idle.append(conn)
        refused = {addr: f"{r.code} {r.message}" for addr, r in errors.items()}
        primary = errors.get(message.to)
        if primary is not None:
            # a Cc took the mail but the person it was for did not
            raise classify_smtp_error(
                aiosmtplib.SMTPRecipientsRefused(
                    [aiosmtplib.SMTPRecipientRefused(primary.code, primary.message, message.to)]
                )
            )
        return SendResult(
            provider_id=message_id,
            status=CommStatus.SENT,
            detail={"smtp_reply": reply, "refused": refused} if refused else {"smtp_reply": reply},
        )

    def routes(self) -> list[web.RouteDef]:
        return []

    async def health(self) -> tuple[bool, str]:
        try:
            conn = await self._connect()
        except Exception as exc:  # noqa: BLE001 - health reports any failure as text
            return False, f"SMTP {self.config.host}:{self.config.smtp_port}: {exc}"
        await self._discard(conn)
        return True, f"SMTP {self.config.host}:{self.config.smtp_port} reachable"

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._discard(conn)


def hub_secret(hub) -> bytes:
    """The hub secret (``[hub] secret_key``), so Message-IDs are the same across restarts."""
    value = hub.config.hub.secret_key
    raw = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
    return raw.encode()


def email_config(hub) -> EmailConfig | None:
    section = hub.config.section("email")
    return section if isinstance(section, EmailConfig) else None


# --------------------------------------------------------------------------- hooks


@hookimpl
def vethub_config_sections() -> dict[str, type[BaseModel]]:
    return {"email": EmailConfig}


@hookimpl
def vethub_channels(hub) -> Iterable[SmtpEmailChannel]:
    config = email_config(hub)
    if config is None or config.backend != "smtp":
        return []
    key = config.load_dkim_key(Path(hub.config_path).parent if hub.config_path else None)
    return [SmtpEmailChannel(config, secret=hub_secret(hub), dkim_key=key)]
