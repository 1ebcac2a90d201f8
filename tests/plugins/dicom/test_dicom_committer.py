"""The receiver's group commit: a row commits only after its file is durable, never before."""

from __future__ import annotations

import asyncio
from concurrent.futures import Future

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from hub.db.models import Practice
from hub.imaging.models import Instance
from hub.imaging.service import ReceivedInstance
from hub.testing.work import WatchedWork, until_set
from plugins.dicom.committer import Committer
from plugins.dicom.storage import StorageUnavailable


def _item(practice_id: int, sop: str) -> ReceivedInstance:
    return ReceivedInstance(
        practice_id=practice_id, calling_ae="SCANNER1", peer_address="127.0.0.1",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2", sop_instance_uid=sop,
        study_instance_uid="1.2.3", series_instance_uid="1.2.3.4",
        transfer_syntax_uid="1.2.840.10008.1.2.1", size_bytes=100,
        path=f"p{practice_id}/1.2.3/1.2.3.4/{sop}.dcm", modality="CT",
    )


@pytest.fixture
async def committed(hub_factory, dicom_config_data):
    """(hub, committer, practice id, a function listing committed SOP Instance UIDs)."""
    data = dicom_config_data()
    data["dicom"]["enabled"] = False  # the committer alone, no receiver
    hub = await hub_factory(data)
    async with hub.sessionmaker() as s:
        practice_id = await s.scalar(select(Practice.id).where(Practice.slug == "vet-one"))
    committer = Committer(hub, stable_age=30, overwrite=False)
    await committer.start()
    # A reader of its own (no BEGIN IMMEDIATE): it sees only what is committed.
    reader = create_async_engine(hub.config.database.url)

    async def uids() -> set[str]:
        async with reader.connect() as conn:
            return set((await conn.execute(select(Instance.sop_instance_uid))).scalars())

    yield hub, committer, practice_id, uids
    await committer.stop()
    await reader.dispose()


async def test_the_row_waits_for_its_file(committed):
    _hub, committer, practice_id, uids = committed
    write = WatchedWork()
    submit = asyncio.create_task(committer.submit(_item(practice_id, "1.1"), write))
    await until_set(write.awaited, "a wait for the file")
    # the row is written in an open transaction that waits for the file: nothing is visible
    assert "1.1" not in await uids() and not submit.done()
    write.set_result(None)
    outcome = await asyncio.wait_for(submit, 30)
    assert outcome.created and "1.1" in await uids()


async def test_a_file_that_fails_drops_its_row_and_not_the_others(committed):
    _hub, committer, practice_id, uids = committed
    good, bad = Future(), Future()
    good.set_result(None)
    bad.set_exception(StorageUnavailable("cannot store 2.1: No space left on device"))
    results = await asyncio.gather(
        committer.submit(_item(practice_id, "1.1"), good),
        committer.submit(_item(practice_id, "2.1"), bad),
        committer.submit(_item(practice_id, "3.1")),  # written before it was submitted
        return_exceptions=True,
    )
    assert results[0].created and results[2].created
    assert isinstance(results[1], StorageUnavailable)
    assert await uids() == {"1.1", "3.1"}
    # one transaction rolled back for the bad file, one committed the rest
    assert committer.batches == 1 and committer.committed == 2
