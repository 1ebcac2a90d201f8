"""``[inbound]``: where inbound mail comes in and whom to believe (docs/inbound-email.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator


class ImapConfig(BaseModel):
    """``[inbound.imap]``: a mailbox to poll (IDLE where the server supports it)."""

    model_config = ConfigDict(extra="forbid")

    host: str
    port: int | None = None  # default 993 with tls = "tls", else 143
    tls: Literal["none", "tls"] = "tls"
    username: str
    password: SecretStr
    mailbox: str = "INBOX"
    #: seconds between polls without IDLE, and the longest IDLE before it is renewed
    poll_seconds: float = Field(60.0, gt=0)
    idle: bool = True
    timeout: float = 30.0

    @property
    def imap_port(self) -> int:
        return self.port or (993 if self.tls == "tls" else 143)


class InboundConfig(BaseModel):
    """The [inbound] section: LMTP and IMAP intake, size caps, trusted senders, bounce rules."""
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    #: the LMTP listener the MTA delivers to, "host:port" (port 0: any free port, for tests)
    listen: str = "127.0.0.1:2424"
    #: raw bytes kept per message; the rest is dropped (the headers and reports come first)
    max_bytes: int = Field(4 * 1024 * 1024, ge=16 * 1024)
    #: messages larger than this are refused outright (552) instead of being read into memory
    refuse_bytes: int = Field(40 * 1024 * 1024, ge=16 * 1024)
    #: the address advertised in List-Unsubscribe's mailto (default: [email] unsubscribe_mailto,
    #: else its from_address)
    unsubscribe_address: str | None = None
    #: where practices write in (switch requests, questions)
    support_address: str | None = None
    #: authserv-ids of our own MTA's Authentication-Results headers; others are ignored
    trusted_authserv_ids: list[str] = Field(default_factory=list)
    #: LMTP peers whose every delivery is trusted (an MTA that already rejects unauthenticated mail)
    trusted_peers: list[str] = Field(default_factory=list)
    #: also verify DKIM signatures here (dkimpy; needs DNS)
    verify_dkim: bool = False
    #: the DNS server DKIM keys are looked up at, "host:port" (default: the system's resolvers)
    dns_server: str | None = None
    #: seconds a DKIM key lookup may take before the signature counts as failed
    dns_timeout: float = Field(5.0, gt=0, le=60)
    #: soft bounces within soft_bounce_days that mark an address bounced
    soft_bounce_threshold: int = Field(3, ge=1)
    soft_bounce_days: int = Field(14, ge=1)
    #: poll an IMAP mailbox as well
    imap: ImapConfig | None = None
    #: run the LMTP listener (false: IMAP only)
    lmtp: bool = True

    @field_validator("listen", "dns_server")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None:
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ValueError('is "host:port"')
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])
