"""The ``[dicom]`` config section: the receiver's listener, storage and study stability."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class DicomConfig(BaseModel):
    """Receiver settings. Example::

    [dicom]
    host = "0.0.0.0"          # bind address (127.0.0.1 by default)
    port = 11112
    ae_title = "VETHUB"       # the called AE title modalities must use
    storage_root = "/srv/vethub/dicom"
    stable_age = 60
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    engine: Literal["hub", "pynetdicom"] = Field(
        "hub", description="the hub's own upper layer, or pynetdicom's (slower; for comparison)"
    )
    host: str = "127.0.0.1"
    port: int = Field(11112, ge=0, le=65535, description="0 picks a free port (tests)")
    ae_title: str = Field("VETHUB", min_length=1, max_length=16)
    max_associations: int = Field(10, ge=1, le=1000)
    max_pdu: int = Field(131072, ge=0, description="largest PDU the hub receives; 0 means no limit")
    storage_root: Path | None = Field(
        None, description="where instances are written; default <data_dir>/dicom"
    )
    stable_age: float = Field(60, gt=0, description="seconds without a new instance")
    refuse_unknown_callers: bool = True
    unknown_caller_practice: str | None = Field(
        None,
        description="practice slug that instances from unregistered callers are filed "
        "under when refuse_unknown_callers is false",
    )
    overwrite_resent: bool = False
    processes: int = Field(
        1,
        ge=1,
        le=64,
        description="receiver processes sharing the listening socket; the extra ones send "
        "their rows to the hub process's committer",
    )
    commit_batch: int = Field(
        64, ge=1, le=1000, description="most instances committed in one transaction"
    )
    forward_timeout: float = Field(60, gt=0, description="seconds per forward association")
    network_timeout: float = Field(
        60, gt=0, description="seconds a receiving association may send nothing before it is aborted"
    )

    @field_validator("engine", mode="before")
    @classmethod
    def _engine(cls, value: object) -> object:
        return "hub" if value == "asyncio" else value  # its name until 2026-11-27

    @field_validator("ae_title")
    @classmethod
    def _ae_title(cls, value: str) -> str:
        value = value.strip()
        if not value or not all(32 <= ord(c) < 127 and c != "\\" for c in value):
            raise ValueError("an AE title is 1-16 printable ASCII characters, no backslash")
        return value

    @model_validator(mode="after")
    def _processes(self) -> DicomConfig:
        if self.processes > 1 and self.engine != "hub":
            raise ValueError('processes > 1 needs engine = "hub" (pynetdicom\'s is one process)')
        return self

    @model_validator(mode="after")
    def _unknown(self) -> DicomConfig:
        if not self.refuse_unknown_callers and not self.unknown_caller_practice:
            raise ValueError(
                "refuse_unknown_callers = false needs unknown_caller_practice (a practice slug)"
            )
        return self
