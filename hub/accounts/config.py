"""The accounts domain's config sections: ``[onboarding]`` and ``[switching]``."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from hub.accounts.policy import SwitchWindows
from hub.config import Section


class OnboardingSection(Section):
    """Onboarding settings: set-password links, request rate limits, DICOM details for practices."""
    password_link_hours: float = Field(72.0, gt=0, description="how long a set-password link works")
    rate_limit: int = Field(10, ge=1, description="account requests per client address per window")
    rate_window_seconds: float = Field(3600.0, gt=0)
    dicom_host: str | None = Field(None, description="host practices send images to (default: the hub's public host)")
    dicom_port: int = Field(11112, ge=1, le=65535, description="the hub's DICOM port, as practices reach it")
    called_ae: str = Field("VETHUB", min_length=1, max_length=16, description="the hub's AE title")
    ae_prefix: str = Field("VH", min_length=1, max_length=8, description="prefix of assigned calling AE titles")
    login_token_hours: float = Field(12.0, gt=0, description="how long a token from POST /api/login works")


class SwitchingSection(Section):
    """Switch settings: what counts as recent activity, how long the current company may answer."""
    activity_days: int = Field(365, ge=0, description="a case within this many days before a request means the current company is asked")
    response_hours: float = Field(72.0, gt=0, description="how long the current company has to answer")

    def windows(self) -> SwitchWindows:
        return SwitchWindows(activity=timedelta(days=self.activity_days), response=timedelta(hours=self.response_hours))


def onboarding_settings(hub) -> OnboardingSection:
    return hub.config.section("onboarding") or OnboardingSection()


def switching_settings(hub) -> SwitchingSection:
    return hub.config.section("switching") or SwitchingSection()
