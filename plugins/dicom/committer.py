"""Group commit of received instances on the hub's event loop.

Each association thread submits one instance and waits. A single task takes whatever is
waiting (up to ``max_batch``) and files it all in one transaction, so concurrent associations
share one durable commit instead of paying one each (PERFORMANCE.md: the commit is a sixth of
the receiver's time). If the batch fails, each instance is retried in its own transaction, so
one bad instance fails alone.

An instance is submitted as soon as its header passed, while its file is still being written
(``durable``, the ``concurrent.futures.Future`` of the write, which fails with the reason the
file is not durable). A batch takes only instances whose files are durable, so a row never
commits before its file, and the one database connection is never held while a disk flushes:
with four associations, holding it through another instance's fsync made each row wait ~4 ms
for the next batch. An instance whose file failed gets that failure and no row.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hub.imaging.service import ReceivedInstance, StoreOutcome, file_received

if TYPE_CHECKING:
    from hub.core import Hub

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Pending:
    item: ReceivedInstance
    durable: Future[Any] | None
    future: asyncio.Future[StoreOutcome]


class Committer:
    def __init__(
        self, hub: Hub, *, stable_age: float, overwrite: bool, max_batch: int = 64
    ) -> None:
        self.hub = hub
        self.stable_age = stable_age
        self.overwrite = overwrite
        self.max_batch = max_batch
        self._pending: list[_Pending] = []
        self._kick = asyncio.Event()  # an instance arrived, or a file became durable
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self._study_ids: dict[tuple[int, str], int] = {}
        self.committed = 0

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="vethub-dicom-committer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        pending, self._pending = self._pending, []
        for p in pending:
            _fail(p, RuntimeError("the receiver is stopping"))

    async def submit(self, item: ReceivedInstance, durable: Future[Any] | None = None) -> StoreOutcome:
        """File ``item``; returns once its row is committed (raises if it could not be)."""
        return await self.enqueue(item, durable)

    def enqueue(
        self, item: ReceivedInstance, durable: Future[Any] | None = None
    ) -> asyncio.Future[StoreOutcome]:
        """Queue ``item`` for filing; the future ends once its row is committed.

        ``durable``, when given, is the write of the instance's file; the row commits only
        after it succeeded, and its failure (e.g. a :class:`StorageError`) is the future's.
        """
        loop = self._loop
        assert loop is not None, "committer not started"
        fut: asyncio.Future[StoreOutcome] = loop.create_future()
        self._pending.append(_Pending(item, durable, fut))
        self._kick.set()
        if durable is not None:
            durable.add_done_callback(lambda _f: loop.call_soon_threadsafe(self._kick.set))
        return fut

    async def _run(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            batch, waiting = [], []
            for p in self._pending:
                if p.future.done():
                    continue
                failure = _write_failure(p.durable)
                if failure is not None:  # its file is not durable: no row
                    _fail(p, failure)
                    continue
                ready = p.durable is None or p.durable.done()
                (batch if ready and len(batch) < self.max_batch else waiting).append(p)
            self._pending = waiting
            if waiting and len(batch) == self.max_batch:
                self._kick.set()  # more are ready than one batch takes
            if batch:
                await self._commit(batch)

    async def _store_all(self, batch: list[_Pending]) -> list[StoreOutcome]:
        study_ids = dict(self._study_ids)  # only what a committed transaction saw is kept
        outcomes = await file_received(
            self.hub, [p.item for p in batch], stable_age=self.stable_age,
            overwrite=self.overwrite, study_ids=study_ids,
        )
        if len(study_ids) > 10_000:
            study_ids.clear()
        self._study_ids = study_ids
        return outcomes

    async def _commit(self, batch: list[_Pending]) -> None:
        try:
            outcomes = await self._store_all(batch)
        except Exception as err:
            if len(batch) > 1:
                log.info("batch of %d failed (%r); committing one by one", len(batch), err)
                for pending in batch:
                    await self._commit([pending])
                return
            try:  # one retry: a concurrent process may have created the same study
                outcomes = await self._store_all(batch)
            except Exception as again:
                _fail(batch[0], again)
                return
        self.batches += 1
        self.committed += len(batch)
        for pending, outcome in zip(batch, outcomes, strict=True):
            if not pending.future.done():
                pending.future.set_result(outcome)
        if self.hub.pm.hook.vethub_instance_stored.get_hookimpls():
            for pending, outcome in zip(batch, outcomes, strict=True):
                await self.hub.fire(
                    "vethub_instance_stored", hub=self.hub, instance=_view(pending.item, outcome)
                )


def _write_failure(durable: Future[Any] | None) -> BaseException | None:
    if durable is None or not durable.done():
        return None
    if durable.cancelled():
        return RuntimeError("the write was cancelled")
    return durable.exception()


def _fail(pending: _Pending, exc: BaseException) -> None:
    if not pending.future.done():
        pending.future.set_exception(exc)


def _view(item: ReceivedInstance, outcome: StoreOutcome) -> dict:
    return {
        "instance_id": outcome.instance_id,
        "study_id": outcome.study_id,
        "created": outcome.created,
        "practice_id": item.practice_id,
        "sop_instance_uid": item.sop_instance_uid,
        "modality": item.modality,
    }
