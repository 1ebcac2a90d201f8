"""The ``[dicom]`` config section: the receiver's listener, storage and study stability."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# The largest max_pdu: a PDU is read whole into memory, so this bounds what one association
# holds at once.
MAX_PDU_LIMIT = 16 * 1024 * 1024


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
    max_associations: int = Field(
        10, ge=1, le=1000, description="negotiated associations at once; more are rejected"
    )
    max_negotiating: int = Field(
        100, ge=1, le=10000,
        description="connections at once that have not yet been accepted as an association "
        "(counted apart from max_associations); more are rejected at once",
    )
    max_pdu: int = Field(
        131072, ge=0, le=MAX_PDU_LIMIT,
        description="largest P-DATA-TF PDU the hub receives (its maximum length)",
    )
    max_associate_rq: int = Field(
        65536, ge=1024, le=1048576,
        description="largest A-ASSOCIATE-RQ the hub reads; a longer one is aborted",
    )
    artim_timeout: float = Field(
        30, gt=0, le=600,
        description="seconds from connect to a complete A-ASSOCIATE-RQ, and from the "
        "release to the peer closing (PS3.8 ARTIM)",
    )
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
        60, gt=0,
        description="seconds an accepted association may stay idle (send nothing) before it "
        "is aborted",
    )

    tls_port: int | None = Field(
        None, ge=0, le=65535,
        description="a second port taking associations over TLS (0 picks a free one, tests)",
    )
    tls_certificate: Path | None = Field(None, description="PEM certificate (chain) of the hub")
    tls_private_key: Path | None = Field(None, description="PEM private key of the certificate")
    tls_client_ca: Path | None = Field(
        None, description="PEM CA certificates: when set, callers on the TLS port must present "
        "a certificate signed by one of them (mutual TLS)",
    )

    @field_validator("engine", mode="before")
    @classmethod
    def _engine(cls, value: object) -> object:
        return "hub" if value == "asyncio" else value  # its name until 2026-11-27

    @field_validator("max_pdu")
    @classmethod
    def _max_pdu(cls, value: int) -> int:
        if value == 0:
            raise ValueError(
                "max_pdu = 0 (no limit) is not supported: a peer could then send a whole data "
                f"set as one PDU, held in memory; give a size from 1024 to {MAX_PDU_LIMIT}"
            )
        if value < 1024:
            raise ValueError("max_pdu must be at least 1024")
        return value

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
    def _tls(self) -> DicomConfig:
        if self.tls_port is None:
            return self
        if self.engine != "hub":
            raise ValueError('tls_port needs engine = "hub"')
        if self.tls_certificate is None or self.tls_private_key is None:
            raise ValueError("tls_port needs tls_certificate and tls_private_key")
        for name in ("tls_certificate", "tls_private_key", "tls_client_ca"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name} {path} is not a readable file")
        return self

    @model_validator(mode="after")
    def _unknown(self) -> DicomConfig:
        if not self.refuse_unknown_callers and not self.unknown_caller_practice:
            raise ValueError(
                "refuse_unknown_callers = false needs unknown_caller_practice (a practice slug)"
            )
        return self
