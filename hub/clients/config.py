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

from pydantic import BaseModel, ConfigDict, Field


class PracticeClientsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: the loyalty program is off unless a practice turns it on
    loyalty: bool = False
    #: reminders go out only between these times, in the practice's time zone
    sending_hours_start: time = time(9, 0)
    sending_hours_end: time = time(18, 0)
    #: send a survey after each visit synced from the PIMS
    surveys: bool = True


class ClientsConfig(BaseModel):
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
