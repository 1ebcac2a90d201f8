"""``[inbound]``: where inbound mail comes in and whom to believe (docs/inbound-email.md)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class InboundConfig(BaseModel):
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
    #: soft bounces within soft_bounce_days that mark an address bounced
    soft_bounce_threshold: int = Field(3, ge=1)
    soft_bounce_days: int = Field(14, ge=1)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ValueError('listen is "host:port"')
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])
