"""The receiver's group commit thread: batches, one bad instance failing alone, stopping."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from hub.hookspecs import hookimpl
from hub.imaging.service import ImagingError
from plugins.dicom.committer import CommitterStopped

from .rows import received_item, second_practice


async def test_rows_submitted_together_commit_together(committed):
    _hub, committer, practice_id, uids = committed
    futures = [committer.submit_nowait(received_item(practice_id, f"1.{n}")) for n in range(1, 21)]
    outcomes = [await asyncio.wrap_future(f) for f in futures]
    assert all(o.created for o in outcomes)
    assert len({o.study_id for o in outcomes}) == 1
    assert await uids() == {f"1.{n}" for n in range(1, 21)}
    assert committer.committed == 20 and committer.batches < 20


async def test_an_instance_that_cannot_be_filed_fails_alone(committed):
    hub, committer, practice_id, uids = committed
    other_id = await second_practice(hub)
    await asyncio.wrap_future(committer.submit_nowait(received_item(other_id, "9.1", study="9.2")))
    # the same SOP Instance UID from another practice is refused; the batch's others commit
    futures = [
        committer.submit_nowait(received_item(practice_id, "1.1")),
        committer.submit_nowait(received_item(practice_id, "9.1")),
        committer.submit_nowait(received_item(practice_id, "1.2")),
    ]
    results = await asyncio.gather(*map(asyncio.wrap_future, futures), return_exceptions=True)
    assert results[0].created and results[2].created
    assert isinstance(results[1], ImagingError) and "another practice" in str(results[1])
    assert await uids() == {"9.1", "1.1", "1.2"}


async def test_submit_blocks_its_thread_until_the_row_is_committed(committed):
    _hub, committer, practice_id, uids = committed
    outcome = await asyncio.to_thread(committer.submit, received_item(practice_id, "1.1"))
    assert outcome.created and "1.1" in await uids()


async def test_stopping_fails_what_was_not_committed_and_refuses_more(committed):
    hub, committer, practice_id, uids = committed
    # Hold a lock so that the committer's first batch waits for it.
    blocker = create_async_engine(hub.config.database.url)
    async with blocker.connect() as conn:
        if hub.is_sqlite:
            await conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock
        else:
            await conn.exec_driver_sql("LOCK TABLE instances IN EXCLUSIVE MODE")
        first = committer.submit_nowait(received_item(practice_id, "1.1"))
        second = committer.submit_nowait(received_item(practice_id, "1.2"))
        stopped = threading.Thread(target=committer.stop)
        stopped.start()
        await conn.rollback()
    await asyncio.to_thread(stopped.join, 30)
    await blocker.dispose()
    results = await asyncio.gather(
        asyncio.wrap_future(first), asyncio.wrap_future(second), return_exceptions=True
    )
    # whatever the batch in hand held committed; nothing was left waiting, nothing lost silently
    committed_uids = await uids()
    for uid, result in zip(["1.1", "1.2"], results, strict=True):
        if isinstance(result, BaseException):
            assert isinstance(result, CommitterStopped) and uid not in committed_uids
        else:
            assert result.created and uid in committed_uids
    late = committer.submit_nowait(received_item(practice_id, "1.3"))
    with pytest.raises(CommitterStopped):
        late.result(0)


async def test_stored_event_fires_once_per_instance_in_commit_order(committed):
    """One trip to the loop per batch, yet every instance heard of once, in order, and a
    failing listener neither stops the others nor fails an instance."""
    hub, committer, practice_id, _uids = committed
    heard: list[tuple[int, str]] = []

    class Listener:
        @hookimpl
        def vethub_instance_stored(self, instance):
            heard.append((instance["instance_id"], instance["sop_instance_uid"]))

    class Broken:
        @hookimpl
        def vethub_instance_stored(self, instance):
            raise RuntimeError("a plugin's bug")

    hub.pm.register(Listener(), name="listener")
    hub.pm.register(Broken(), name="broken")
    futures = [committer.submit_nowait(received_item(practice_id, f"1.{n}")) for n in range(1, 31)]
    outcomes = [await asyncio.wrap_future(f) for f in futures]
    await asyncio.to_thread(committer.stop)  # waits for the last batch's event
    assert committer.batches < 30  # batched, so fewer trips to the loop than instances
    assert sorted(heard) == heard  # commit order: instance ids ascend
    assert [uid for _, uid in heard] == [f"1.{n}" for n in range(1, 31)]
    assert {i for i, _ in heard} == {o.instance_id for o in outcomes}


async def test_a_slow_stored_listener_does_not_hold_up_commits(committed):
    """The event goes to the loop after the commit and is not waited for: batches go on
    committing while a listener is still busy with an earlier one (up to FIRING_BEHIND
    batches), and the listener still hears every instance once, in commit order."""
    hub, committer, practice_id, uids = committed
    heard: list[str] = []
    release = asyncio.Event()

    class Slow:
        @hookimpl
        def vethub_instance_stored(self, instance):
            async def hear() -> None:
                await release.wait()
                heard.append(instance["sop_instance_uid"])

            return hear()

    hub.pm.register(Slow(), name="slow")
    for n in range(1, 4):  # one instance at a time: three batches, the first one's event held
        future = committer.submit_nowait(received_item(practice_id, f"1.{n}"))
        # a deadline only so that a commit held up fails the test rather than hanging it
        await asyncio.wait_for(asyncio.wrap_future(future), 60)
    assert await uids() == {"1.1", "1.2", "1.3"} and heard == []
    release.set()
    await asyncio.to_thread(committer.stop)  # waits for the events still on the loop
    assert heard == ["1.1", "1.2", "1.3"]
