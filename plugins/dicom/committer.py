"""Group commit of received instances on the hub's event loop.

Each association thread submits one instance and waits. A single task takes whatever is
waiting (up to ``max_batch``) and files it all in one transaction, so concurrent associations
share one durable commit instead of paying one each (PERFORMANCE.md: the commit is a sixth of
the receiver's time). If the batch fails, each instance is retried in its own transaction, so
one bad instance fails alone.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from hub.imaging.service import ReceivedInstance, StoreOutcome, store_instances

if TYPE_CHECKING:
    from hub.core import Hub

log = logging.getLogger(__name__)


class Committer:
    def __init__(
        self, hub: Hub, *, stable_age: float, overwrite: bool, max_batch: int = 64
    ) -> None:
        self.hub = hub
        self.stable_age = stable_age
        self.overwrite = overwrite
        self.max_batch = max_batch
        self._queue: asyncio.Queue[tuple[ReceivedInstance, asyncio.Future[StoreOutcome]]] | None
        self._queue = None
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self._study_ids: dict[tuple[int, str], int] = {}
        self.committed = 0

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="vethub-dicom-committer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._queue is not None:
            while not self._queue.empty():
                _item, fut = self._queue.get_nowait()
                if not fut.done():
                    fut.set_exception(RuntimeError("the receiver is stopping"))

    async def submit(self, item: ReceivedInstance) -> StoreOutcome:
        """File ``item``; returns once its row is committed (raises if it could not be)."""
        assert self._queue is not None, "committer not started"
        fut: asyncio.Future[StoreOutcome] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, fut))
        return await fut

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            batch = [(item, fut) for item, fut in batch if not fut.done()]
            if batch:
                await self._commit(batch)

    async def _store_all(self, items: list[ReceivedInstance]) -> list[StoreOutcome]:
        study_ids = dict(self._study_ids)  # only what a committed transaction saw is kept
        async with self.hub.transaction() as session:
            outcomes = await store_instances(
                session, self.hub, items, stable_age=self.stable_age, overwrite=self.overwrite,
                study_ids=study_ids,
            )
        if len(study_ids) > 10_000:
            study_ids.clear()
        self._study_ids = study_ids
        return outcomes

    async def _commit(self, batch: list) -> None:
        try:
            outcomes = await self._store_all([item for item, _ in batch])
        except Exception:
            if len(batch) == 1:
                outcomes = None
            else:
                log.info("batch of %d failed; committing one by one", len(batch))
                for pair in batch:
                    await self._commit([pair])
                return
        if outcomes is None:
            item, fut = batch[0]
            try:  # one retry: a concurrent process may have created the same study
                outcome = (await self._store_all([item]))[0]
            except Exception as err:
                if not fut.done():
                    fut.set_exception(err)
                return
            outcomes = [outcome]
        self.batches += 1
        self.committed += len(batch)
        for (_item, fut), outcome in zip(batch, outcomes, strict=True):
            if not fut.done():
                fut.set_result(outcome)
        if self.hub.pm.hook.vethub_instance_stored.get_hookimpls():
            for (item, _fut), outcome in zip(batch, outcomes, strict=True):
                await self.hub.fire(
                    "vethub_instance_stored", hub=self.hub, instance=_view(item, outcome)
                )


def _view(item: ReceivedInstance, outcome: StoreOutcome) -> dict:
    return {
        "instance_id": outcome.instance_id,
        "study_id": outcome.study_id,
        "created": outcome.created,
        "practice_id": item.practice_id,
        "sop_instance_uid": item.sop_instance_uid,
        "modality": item.modality,
    }
