"""The sync engine with a connector written in the test: rejects, checkpoints, failures."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel
from sqlalchemy import select

from hub.config import load_config
from hub.db.models import HubEvent
from hub.hookspecs import hookimpl
from hub.pims.connector import ConnectorConfig, ConnectorContext, ConnectorError, Health
from hub.pims.models import Client, Patient, SyncCheckpoint, SyncReject
from hub.pims.records import Batch, Checkpoint, ClientRecord, PatientRecord, Reject
from hub.pims.sync import sync_practices
from hub.plugins import get_plugin_manager
from hub.testing.fixtures_core import base_config_data

SEEN: list[tuple[Any, bool]] = []
FAIL_AFTER_FIRST = {"on": False}


class MemoryConfig(ConnectorConfig):
    label: str = "memory"


class MemoryConnector:
    name: ClassVar[str] = "memory"
    config_model: ClassVar[type[BaseModel]] = MemoryConfig

    def __init__(self, config: MemoryConfig, context: ConnectorContext) -> None:
        self.context = context

    async def health(self) -> Health:
        return Health(True)

    async def batches(self, since: Checkpoint | None, full: bool) -> AsyncIterator[Batch]:
        SEEN.append((since, full))
        n = (since or {}).get("n", 0)
        yield Batch(
            checkpoint={"n": n + 1},
            clients=[
                ClientRecord("C1", "Ann", "Lee", email="ann@example.com", phone_mobile="415 555 0101"),
                ClientRecord("C2", "Bo", "x" * 201),
                ClientRecord("C3", "Cy", "Doe", email="cy@@example.com"),
            ],
            patients=[PatientRecord("P1", "C1", "Rex", status="deceased")],
            rejects=[Reject("client", "could not read item", {"garbage": True})],
        )
        if FAIL_AFTER_FIRST["on"]:
            raise ConnectorError("memory PIMS went away")


class Plugin:
    @hookimpl
    def vethub_pims_connectors(self) -> list[type]:
        return [MemoryConnector]


async def test_rejects_checkpoints_and_failures(hub_factory, db_url: str, tmp_path: Path) -> None:
    SEEN.clear()
    FAIL_AFTER_FIRST["on"] = False
    plugins = [("memory", Plugin())]
    data = base_config_data(db_url, tmp_path, {"practices": [
        {"slug": "oak", "name": "Oak", "country": "US", "pims": [{"connector": "memory"}]}]})
    config = load_config("<test>", data=data, env={}, pm=get_plugin_manager(extra=plugins))
    hub = await hub_factory(config=config, plugins=plugins)

    [run] = await sync_practices(hub)
    assert run.status == "succeeded", run.error
    assert run.counts["client"] == {"inserted": 1, "updated": 0, "unchanged": 0, "rejected": 3}
    async with hub.sessionmaker() as s:
        [client] = (await s.execute(select(Client))).scalars().all()
        pet = (await s.execute(select(Patient))).scalar_one()
        reasons = sorted(r.reason for r in (await s.execute(select(SyncReject))).scalars())
        checkpoint = (await s.execute(select(SyncCheckpoint.checkpoint))).scalar_one()
    assert client.phone_mobile == "+14155550101" and pet.status == "deceased"
    assert reasons == ["could not read item", "invalid email 'cy@@example.com': "
                       + reasons[1].split(": ", 1)[1], "last_name is longer than 200 characters"]
    assert checkpoint == {"n": 1}

    FAIL_AFTER_FIRST["on"] = True
    [failed] = await sync_practices(hub)
    assert failed.status == "failed" and "went away" in failed.error
    [again] = await sync_practices(hub)
    assert again.status == "failed"
    async with hub.sessionmaker() as s:
        checkpoint = (await s.execute(select(SyncCheckpoint.checkpoint))).scalar_one()
        kinds = [e.kind for e in (await s.execute(select(HubEvent).order_by(HubEvent.id))).scalars()]
    assert checkpoint == {"n": 3}  # the batch before each failure committed
    assert kinds.count("pims.sync_failed") == 1  # one event when it starts failing

    FAIL_AFTER_FIRST["on"] = False
    [ok] = await sync_practices(hub, full=True)
    assert ok.status == "succeeded"
    assert ok.counts["client"]["unchanged"] == 1
    assert SEEN == [(None, False), ({"n": 1}, False), ({"n": 2}, False), (None, True)]
    async with hub.sessionmaker() as s:
        kinds = [e.kind for e in (await s.execute(select(HubEvent).order_by(HubEvent.id))).scalars()]
    assert kinds.count("pims.sync_recovered") == 1
