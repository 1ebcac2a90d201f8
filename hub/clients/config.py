"""``[clients]``: reminders, surveys and loyalty, with per-practice settings (all optional).

```toml
[clients]
reminder_every_seconds = 900

[clients.practices.oak]
loyalty = true
sending_hours_start = "09:00"
sending_hours_end = "18:00"
```
"""

from __future__ import annotations

from datetime import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class PracticeClientsConfig(BaseModel):
    """One practice's clients settings: loyalty, surveys, sending hours and its own email sender."""
    model_config = ConfigDict(extra="forbid")

    #: the loyalty program is off unless a practice turns it on
    loyalty: bool = False
    #: reminders go out only between these times, in the practice's time zone
    sending_hours_start: time = time(9, 0)
    sending_hours_end: time = time(18, 0)
    #: send a survey after each visit synced from the PIMS
    surveys: bool = True
    #: where replies to the practice's client email go (default: the practice's email)
    reply_to: str | None = None
    #: send the practice's client email from its own address; the hub's address and DKIM key
    #: stay the fallback. Its domain needs the DKIM key below (and the SPF record) to pass DMARC.
    from_address: str | None = None
    dkim_selector: str | None = None
    dkim_private_key_path: str | None = None
    dkim_private_key: SecretStr | None = None

    @model_validator(mode="after")
    def _dkim_together(self) -> PracticeClientsConfig:
        has_key = bool(self.dkim_private_key_path or self.dkim_private_key)
        if (self.dkim_selector or has_key) and not (self.from_address and self.dkim_selector
                                                    and has_key):
            raise ValueError("a practice's DKIM needs from_address, dkim_selector and "
                             "dkim_private_key_path (or dkim_private_key) together")
        for name in ("from_address", "reply_to"):
            value = getattr(self, name)
            if value is not None and ("@" not in value or any(c in value for c in "\r\n<>,")):
                raise ValueError(f"{name} must be one plain email address")
        return self


class ClientsConfig(BaseModel):
    """The [clients] section: reminder runs, survey links, rewards, per-practice settings."""
    model_config = ConfigDict(extra="forbid")

    #: how often the reminder and survey run looks for due steps (a durable schedule)
    reminder_every_seconds: int = Field(900, ge=0, le=86_400)
    #: a visit older than this gets no survey (the sync caught up late, or surveys were off)
    survey_window_days: int = Field(7, ge=1, le=90)
    #: days a survey link stays valid
    survey_link_days: int = Field(30, ge=1, le=365)
    #: rewards a practice may fulfil, by name: their price in coins
    rewards: dict[str, int] = Field(default_factory=lambda: {"nail trim": 50, "free exam": 200})
    #: per practice slug
    practices: dict[str, PracticeClientsConfig] = Field(default_factory=dict)

    def practice(self, slug: str) -> PracticeClientsConfig:
        return self.practices.get(slug) or _DEFAULT_PRACTICE


_DEFAULT_PRACTICE = PracticeClientsConfig()
_DEFAULT = ClientsConfig()


def clients_config(hub: Any) -> ClientsConfig:
    section = hub.config.section("clients")
    return section if isinstance(section, ClientsConfig) else _DEFAULT
