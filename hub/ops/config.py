"""The ``[operations]`` config section: storage watermark and database integrity checks."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

GIB = 1024**3


class OperationsConfig(BaseModel):
    """Example::

    [operations]
    min_free_bytes = 2147483648     # below: /readyz 503 and the DICOM receiver refuses associations
    integrity_check_every = 3600    # seconds between SQLite quick_checks after the start-up one
    image_retention_days = { parkside = 90, "*" = 365 }   # default: keep every image
    """

    model_config = ConfigDict(extra="forbid")

    min_free_bytes: int | None = Field(
        None, ge=0, description="free bytes a storage root must keep; below it the hub is not ready "
        "and the DICOM receiver refuses new associations (transiently) before the disk is full. "
        "Default: 1 GiB, or 5% of the filesystem when that is smaller; 0 turns it off")
    image_retention_days: dict[str, int] = Field(
        default_factory=dict, description="days to keep the image files of a study once every "
        "case of it is delivered, by practice slug; \"*\" for every other practice; "
        "a practice not named (the default) keeps its images")
    retention_every: int = Field(86400, ge=60, description="seconds between retention runs")
    integrity_check_every: float = Field(
        3600, ge=0, description="seconds between database integrity checks (SQLite PRAGMA "
        "quick_check) after the one at start-up; 0: only at start-up")


def operations_config(hub: Any) -> OperationsConfig:
    section = hub.config.section("operations")
    return section if isinstance(section, OperationsConfig) else OperationsConfig()
