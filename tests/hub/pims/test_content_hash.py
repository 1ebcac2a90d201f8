"""Records whose content hash is unchanged are skipped; every other record is normalised,
validated and written (docs/pims.md, "What a sync skips")."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel
from sqlalchemy import select, update

from hub.config import load_config
from hub.hookspecs import hookimpl
from hub.pims import normalise as normalise_module
from hub.pims.connector import ConnectorConfig, ConnectorContext, Health
from hub.pims.models import Client, SyncReject
from hub.pims.normalise import content_hash
from hub.pims.records import Batch, Checkpoint, ClientRecord, ClientStatus
from hub.pims.sync import sync_practices
from hub.plugins import get_plugin_manager
from hub.testing.fixtures_core import base_config_data

#: external id -> the client's fields as the PIMS has them now; each run yields fresh records
#: (the engine normalises records in place).
PIMS: dict[str, dict[str, Any]] = {}
SYNCED: list[str] = []


class PimsConfig(ConnectorConfig):
    label: str = "hashed"


class PimsConnector:
    name: ClassVar[str] = "hashed"
    config_model: ClassVar[type[BaseModel]] = PimsConfig

    def __init__(self, config: PimsConfig, context: ConnectorContext) -> None:
        self.context = context

    async def health(self) -> Health:
        return Health(True)

    async def batches(self, since: Checkpoint | None, full: bool) -> AsyncIterator[Batch]:
        yield Batch(checkpoint={"full": full},
                    clients=[ClientRecord(external_id, **fields) for external_id, fields in PIMS.items()])


class Plugin:
    @hookimpl
    def vethub_pims_connectors(self) -> list[type]:
        return [PimsConnector]

    @hookimpl
    def vethub_client_synced(self, hub: Any, client: Client) -> None:
        SYNCED.append(client.external_id)


async def _hub(hub_factory: Any, db_url: str, tmp_path: Path) -> Any:
    plugins = [("hashed", Plugin())]
    data = base_config_data(db_url, tmp_path, {"practices": [
        {"slug": "oak", "name": "Oak", "country": "US", "pims": [{"connector": "hashed"}]}]})
    config = load_config("<test>", data=data, env={}, pm=get_plugin_manager(extra=plugins))
    return await hub_factory(config=config, plugins=plugins)


async def _clients(hub: Any) -> dict[str, Client]:
    async with hub.sessionmaker() as s:
        return {c.external_id: c for c in (await s.execute(select(Client))).scalars()}


async def _alter(hub: Any, external_id: str, **values: Any) -> None:
    """Change a synced row behind the engine's back."""
    async with hub.transaction() as s:
        await s.execute(update(Client).where(Client.external_id == external_id).values(**values))


async def _sync(hub: Any) -> dict[str, int]:
    SYNCED.clear()
    [run] = await sync_practices(hub, full=True)
    assert run.status == "succeeded", run.error
    return run.counts["client"]


async def test_unchanged_rows_skip_normalisation_changed_rows_are_normalised(
        hub_factory: Any, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    PIMS.clear()
    PIMS["C1"] = {"first_name": "Ann", "last_name": "Lee", "email": "Ann@Example.COM",
                  "phone_mobile": "(415) 555-0101"}
    PIMS["C2"] = {"first_name": "Bo", "last_name": "Ng", "phone_home": "415.555.0102"}
    hub = await _hub(hub_factory, db_url, tmp_path)

    assert await _sync(hub) == {"inserted": 2, "updated": 0, "unchanged": 0, "rejected": 0}
    rows = await _clients(hub)
    assert rows["C1"].email == "Ann@example.com" and rows["C1"].phone_mobile == "+14155550101"
    assert rows["C1"].content_hash == content_hash(ClientRecord("C1", **PIMS["C1"]), "US")

    # Same PIMS content: neither normalised nor written. An out-of-band edit of the stored,
    # normalised row therefore survives a full sync; that is the documented guarantee.
    await _alter(hub, "C2", phone_home="not normalised")
    assert await _sync(hub) == {"inserted": 0, "updated": 0, "unchanged": 2, "rejected": 0}
    assert (await _clients(hub))["C2"].phone_home == "not normalised" and SYNCED == []

    # Changed content is normalised and validated again before it is written.
    PIMS["C1"]["phone_mobile"] = "+1 415 555 0199"
    assert await _sync(hub) == {"inserted": 0, "updated": 1, "unchanged": 1, "rejected": 0}
    assert (await _clients(hub))["C1"].phone_mobile == "+14155550199" and SYNCED == ["C1"]
    PIMS["C1"]["email"] = "ann@@example.com"
    assert await _sync(hub) == {"inserted": 0, "updated": 0, "unchanged": 1, "rejected": 1}
    assert (await _clients(hub))["C1"].email == "Ann@example.com"  # a reject writes nothing
    PIMS["C1"]["email"] = "Ann@Example.COM"

    # A change that normalises to the same row: unchanged (no event), but the new hash is
    # stored, so the next run skips the record again.
    PIMS["C1"]["first_name"] = "  Ann "
    assert await _sync(hub) == {"inserted": 0, "updated": 0, "unchanged": 2, "rejected": 0}
    assert SYNCED == []
    assert (await _clients(hub))["C1"].content_hash == content_hash(ClientRecord("C1", **PIMS["C1"]), "US")
    await _alter(hub, "C1", first_name="altered")
    assert await _sync(hub) == {"inserted": 0, "updated": 0, "unchanged": 2, "rejected": 0}
    assert (await _clients(hub))["C1"].first_name == "altered"

    # A row without a hash (written before hashes, or cleared to repair it) is normalised and
    # compared in full.
    await _alter(hub, "C1", content_hash=None)
    assert await _sync(hub) == {"inserted": 0, "updated": 1, "unchanged": 1, "rejected": 0}
    assert (await _clients(hub))["C1"].first_name == "Ann"

    # A new normaliser version is new content for every record: all are normalised again
    # (the out-of-band edit of C2 is repaired), and the next run skips them again.
    monkeypatch.setattr(normalise_module, "NORMALISER_VERSION", normalise_module.NORMALISER_VERSION + 1)
    assert await _sync(hub) == {"inserted": 0, "updated": 1, "unchanged": 1, "rejected": 0}
    rows = await _clients(hub)
    assert rows["C2"].phone_home == "+14155550102" and SYNCED == ["C2"]
    assert rows["C1"].content_hash == content_hash(ClientRecord("C1", **PIMS["C1"]), "US")
    await _alter(hub, "C2", phone_home="not normalised")
    assert await _sync(hub) == {"inserted": 0, "updated": 0, "unchanged": 2, "rejected": 0}


async def test_last_version_in_a_batch_wins_and_rejects_are_not_hashed(
        hub_factory: Any, db_url: str, tmp_path: Path) -> None:
    PIMS.clear()
    PIMS["C1"] = {"first_name": "Ann", "email": "ann@example.com"}
    PIMS["C3"] = {"first_name": "Cy", "email": "cy@@example.com"}
    hub = await _hub(hub_factory, db_url, tmp_path)
    assert await _sync(hub) == {"inserted": 1, "updated": 0, "unchanged": 0, "rejected": 1}
    # A rejected record has no row and so no hash: it is validated, and rejected, every run.
    assert await _sync(hub) == {"inserted": 0, "updated": 0, "unchanged": 1, "rejected": 1}
    async with hub.sessionmaker() as s:
        reasons = [r.reason for r in (await s.execute(select(SyncReject))).scalars()]
    assert len(reasons) == 2 and all("cy@@example.com" in r for r in reasons)
    PIMS[" C1"] = {"first_name": "Ann", "email": "ann.new@example.com"}
    assert await _sync(hub) == {"inserted": 0, "updated": 1, "unchanged": 0, "rejected": 1}
    assert (await _clients(hub))["C1"].email == "ann.new@example.com"


def test_hash_covers_content_country_and_normaliser_version(monkeypatch: pytest.MonkeyPatch) -> None:
    record = ClientRecord("C1", "Ann", "Lee", email="ann@example.com")
    same = content_hash(ClientRecord("C1", "Ann", "Lee", email="ann@example.com"), "US")
    assert content_hash(record, "US") == same
    assert content_hash(ClientRecord("C1", "Ann", "Lee", email="ann2@example.com"), "US") != same
    assert content_hash(record, "CA") != same
    # Fields the engine derives do not count: a normalised record keeps its hash input apart.
    record.name_key = "ann lee"
    assert content_hash(record, "US") == same
    # A status given as the enum member or as its value is the same content.
    as_member = ClientRecord("C1", "Ann", "Lee", email="ann@example.com", status=ClientStatus.INACTIVE)
    as_text = ClientRecord("C1", "Ann", "Lee", email="ann@example.com", status="inactive")
    assert content_hash(as_member, "US") == content_hash(as_text, "US") != same
    monkeypatch.setattr(normalise_module, "NORMALISER_VERSION", normalise_module.NORMALISER_VERSION + 1)
    assert content_hash(record, "US") != same
