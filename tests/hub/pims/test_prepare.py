"""Work a connector has the engine do ahead (hub.pims.prepare) changes nothing the sync decides:
a record whose stored hash turns out unchanged is still skipped, what was computed ahead for
it (a reject included) dropped; a batch prepared by anything but the run itself is prepared
again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel
from sqlalchemy import insert, select

from hub.config import load_config
from hub.db.models import Practice
from hub.hookspecs import hookimpl
from hub.pims.connector import ConnectorConfig, ConnectorContext, Health
from hub.pims.models import Client, SyncReject
from hub.pims.normalise import content_hash
from hub.pims.prepare import Preparation, Prepared, prepare_ahead
from hub.pims.records import Batch, Checkpoint, ClientRecord
from hub.pims.sync import sync_practices
from hub.plugins import get_plugin_manager
from hub.testing.fixtures_core import base_config_data

#: what the next run's connector does: "ahead" (prepare_ahead), "forged" (a Prepared of its own)
MODE = {"how": "ahead"}
#: the hub under test, for the connector to write rows "concurrently" before it yields
HUB: list[Any] = []


def _records() -> list[ClientRecord]:
    return [ClientRecord("C1", "Ann", "Lee", email="ann@example.com"),
            ClientRecord("C2", "Bo", "Ng", email="bo@@example.com"),
            ClientRecord("C3", "Cy", "Doe", phone_mobile="(415) 555-0103"),
            ClientRecord("C4", "Di", "Ray", email="di@@example.com")]


class AheadConfig(ConnectorConfig):
    label: str = "ahead"


class AheadConnector:
    name: ClassVar[str] = "ahead"
    config_model: ClassVar[type[BaseModel]] = AheadConfig

    def __init__(self, config: AheadConfig, context: ConnectorContext) -> None:
        self.context = context

    async def health(self) -> Health:
        return Health(True)

    async def batches(self, since: Checkpoint | None, full: bool) -> AsyncIterator[Batch]:
        batch = Batch(checkpoint={"n": 1}, clients=_records())
        if MODE["how"] == "ahead":
            # Another writer stores C1 and C2, with their current hashes, after the run began
            # (so they were normalised ahead) and before this batch's transaction.
            async with HUB[0].transaction() as s:
                practice_id = (await s.execute(select(Practice.id))).scalar_one()
                for record in _records()[:2]:
                    await s.execute(insert(Client).values(
                        practice_id=practice_id, external_id=record.external_id,
                        first_name="stored", content_hash=content_hash(record, "US")))
            prepare_ahead(batch)
            assert isinstance(batch.prepared, Prepared)
        else:
            # A connector cannot hand the engine outcomes: this one claims every record is
            # a valid row, invalid emails included.
            forged = Preparation("US", frozenset({"client"})).prepare(batch)
            for group in forged.groups:
                group.outcomes = [(r.external_id,) for r in group.records]
            batch.prepared = forged
        yield batch


class Plugin:
    @hookimpl
    def vethub_pims_connectors(self) -> list[type]:
        return [AheadConnector]


async def _hub(hub_factory: Any, db_url: str, tmp_path: Path) -> Any:
    plugins = [("ahead", Plugin())]
    data = base_config_data(db_url, tmp_path, {"practices": [
        {"slug": "oak", "name": "Oak", "country": "US", "pims": [{"connector": "ahead"}]}]})
    config = load_config("<test>", data=data, env={}, pm=get_plugin_manager(extra=plugins))
    hub = await hub_factory(config=config, plugins=plugins)
    HUB[:] = [hub]
    return hub


async def _state(hub: Any) -> tuple[dict[str, str | None], list[str | None]]:
    async with hub.sessionmaker() as s:
        clients = {c.external_id: c.first_name for c in (await s.execute(select(Client))).scalars()}
        rejects = [r.external_id for r in (await s.execute(select(SyncReject))).scalars()]
    return clients, rejects


async def test_records_normalised_ahead_are_still_skipped_when_their_hash_is_stored(
        hub_factory: Any, db_url: str, tmp_path: Path) -> None:
    MODE["how"] = "ahead"
    hub = await _hub(hub_factory, db_url, tmp_path)
    [run] = await sync_practices(hub, full=True)
    assert run.status == "succeeded", run.error
    clients, rejects = await _state(hub)
    if hub.is_sqlite:
        # C1 and C2 are skipped: their rows are not touched and C2's reject, computed ahead,
        # is dropped. C3 is inserted, C4 rejected.
        assert run.counts["client"] == {"inserted": 1, "updated": 0, "unchanged": 2, "rejected": 1}
        assert clients == {"C1": "stored", "C2": "stored", "C3": "Cy"} and rejects == ["C4"]
    else:
        # PostgreSQL does not look up the hashes of a kind the practice had no row of when the
        # run began: C1 and C2 are normalised (C2 rejected) and C1 updated; the upsert counts
        # its update as an update all the same.
        assert run.counts["client"] == {"inserted": 1, "updated": 1, "unchanged": 0, "rejected": 2}
        assert clients == {"C1": "Ann", "C2": "stored", "C3": "Cy"} and sorted(rejects) == ["C2", "C4"]


async def test_a_batch_prepared_elsewhere_is_prepared_again(
        hub_factory: Any, db_url: str, tmp_path: Path) -> None:
    MODE["how"] = "forged"
    hub = await _hub(hub_factory, db_url, tmp_path)
    [run] = await sync_practices(hub, full=True)
    assert run.status == "succeeded", run.error
    assert run.counts["client"] == {"inserted": 2, "updated": 0, "unchanged": 0, "rejected": 2}
    clients, rejects = await _state(hub)
    assert clients == {"C1": "Ann", "C3": "Cy"} and sorted(rejects) == ["C2", "C4"]


def test_prepare_ahead_outside_a_run_does_nothing() -> None:
    batch = Batch(checkpoint={}, clients=_records())
    prepare_ahead(batch)
    assert batch.prepared is None
