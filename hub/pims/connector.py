"""The PIMS connector contract.

A plugin contributes connector *classes* through ``vethub_pims_connectors()``. The hub builds
one instance per ``[[practices.pims]]`` entry of a practice::

    [[practices.pims]]
    connector = "file_export"      # the class's ``name``
    name = "main"                  # optional, unique within the practice (default: connector)
    drop_dir = "/srv/drops/oak"    # the connector's own keys, checked by its config_model

and drives it from the sync engine: ``batches(since, full)`` yields :class:`~hub.pims.records.Batch`
objects, each carrying the checkpoint that becomes true once the batch commits. The engine
owns validation, upserts, checkpoints and rejects; a connector only reads its PIMS.

Resumption: after each ``yield`` the generator is resumed only once the batch (and its
checkpoint) has committed. Code after the last ``yield`` may therefore acknowledge work to the
PIMS (the file-export connector moves a file to ``processed/`` there). If the engine stops
early the generator is closed and nothing after the pending ``yield`` runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from hub.pims.records import Batch, Checkpoint

if TYPE_CHECKING:
    import aiohttp


def _utcnow() -> datetime:
    return datetime.now(UTC)


#: seconds between a connector's scheduled incremental syncs, unless its config says otherwise.
DEFAULT_SYNC_EVERY = 900


class ConnectorConfig(BaseModel):
    """Base for a connector's ``config_model``: unknown keys are errors; ``name`` (which tells
    two connectors of one practice apart) and ``sync_every_seconds`` are accepted for every
    connector."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    #: how often the hub runs an incremental sync of this entry; 0 turns the schedule off.
    sync_every_seconds: int = Field(DEFAULT_SYNC_EVERY, ge=0)


@dataclass(frozen=True)
class ConnectorContext:
    """What the hub gives a connector besides its config section."""

    practice_slug: str
    #: ISO 3166 alpha-2 of the practice; the default region for phone numbers.
    practice_country: str
    #: IANA zone of the practice, for PIMS times that carry no offset.
    practice_timezone: str = "UTC"
    #: the hub's shared HTTP session (None when the connector needs none, e.g. in unit tests).
    http: aiohttp.ClientSession | None = None
    #: a directory the connector may keep state in.
    data_dir: Path | None = None
    now: Callable[[], datetime] = _utcnow


@dataclass(frozen=True)
class Health:
    """The result of a connector's health check: whether its PIMS answers, and what went wrong."""
    ok: bool
    detail: str = ""


class ConnectorError(Exception):
    """A connector could not reach or read its PIMS. The message names the system and why."""


@runtime_checkable
class PimsConnector(Protocol):
    """The contract a PIMS connector implements so the hub can sync a practice's data from it."""
    #: the value of ``connector =`` in config that selects this class.
    name: ClassVar[str]
    #: the pydantic model the connector's config keys are validated against.
    config_model: ClassVar[type[BaseModel]]

    def __init__(self, config: BaseModel, context: ConnectorContext) -> None: ...

    def batches(self, since: Checkpoint | None, full: bool) -> AsyncIterator[Batch]:
        """Yield change batches after ``since`` (None: from the beginning).

        ``full`` asks for every record whatever the checkpoint (the engine then passes
        ``since=None`` too); an incremental run yields only what changed.
        """
        ...

    async def health(self) -> Health:
        """Can the PIMS be reached with this configuration? Never raises."""
        ...
