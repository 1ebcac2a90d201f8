"""``[messaging]``: consent, quiet hours, links, tracking and templates (all optional)."""

from __future__ import annotations

from datetime import time

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hub.messaging.verdict import CATEGORIES, CHANNELS


class MessagingConfig(BaseModel):
    """The hub-wide messaging settings: quiet hours, consent rules, links and tracking."""
    model_config = ConfigDict(extra="forbid")

    #: quiet hours in each practice's time zone, "HH:MM"; equal start and end turns them off
    quiet_hours_start: time = time(20, 0)
    quiet_hours_end: time = time(8, 0)
    #: channels that respect quiet hours (postcards arrive days later anyway)
    quiet_hours_channels: list[str] = Field(default_factory=lambda: ["sms"])
    #: categories that need an explicit opt-in row in the consent ledger before any send
    require_opt_in: list[str] = Field(default_factory=list)
    #: categories not sent to a client whose PIMS cannot say whether it disabled their
    #: communications (e.g. ezyVet); [] sends them anyway
    unknown_comms_flag_vetoes: list[str] = Field(default_factory=lambda: ["marketing"])
    #: days a preference-page link stays valid
    preference_link_days: int = Field(30, ge=1, le=3650)
    #: days a List-Unsubscribe one-click link stays valid (mail is read late)
    unsubscribe_link_days: int = Field(400, ge=1, le=3650)
    #: open (pixel) and click (redirect) tracking for email; off by default
    tracking: bool = False
    #: per-practice template overrides live in <templates_dir>/<practice slug>/
    #: (relative paths are under the hub's data_dir)
    templates_dir: str = "templates"
    #: when a channel fails permanently, try the next channel the sender allowed
    fallback: bool = True

    @field_validator("quiet_hours_channels")
    @classmethod
    def _channels(cls, values: list[str]) -> list[str]:
        bad = [v for v in values if v not in CHANNELS]
        if bad:
            raise ValueError(f"unknown channel(s) {bad}; expected some of {list(CHANNELS)}")
        return values

    @field_validator("require_opt_in", "unknown_comms_flag_vetoes")
    @classmethod
    def _categories(cls, values: list[str]) -> list[str]:
        bad = [v for v in values if v not in CATEGORIES]
        if bad:
            raise ValueError(f"unknown categories {bad}; expected some of {sorted(CATEGORIES)}")
        return values


def messaging_config(hub) -> MessagingConfig:
    section = hub.config.section("messaging")
    if isinstance(section, MessagingConfig):
        return section
    return _DEFAULT


_DEFAULT = MessagingConfig()
