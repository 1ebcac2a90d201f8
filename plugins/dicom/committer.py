"""Group commit of received instances, in a thread of its own.

Each association thread writes its instance's file durably, then submits the instance's row
here and waits. The committer thread takes whatever is waiting (up to ``max_batch``) and files
it all in one transaction (:class:`hub.imaging.filer.InstanceFiler`), so concurrent
associations share one commit instead of paying one each. If a batch fails, each instance is
retried in its own transaction, so one bad instance fails alone.

Only instances whose files are already durable are submitted, so a row never commits before
its file. Neither side touches the event loop on SQLite: a row costs two thread wake-ups
(association to committer, committer back), where a commit through the loop and aiosqlite's
thread cost six (docs/performance.md). Only ``vethub_instance_stored`` goes to the loop, once
per committed batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hub.imaging.filer import InstanceFiler
from hub.imaging.service import ReceivedInstance, StoreOutcome

if TYPE_CHECKING:
    from hub.core import Hub

log = logging.getLogger(__name__)

SUBMIT_TIMEOUT = 120.0  # a row not committed by then fails its C-STORE (0xA700)
FIRING_BEHIND = 8  # committed batches whose vethub_instance_stored may still be on the loop


@dataclass(slots=True)
class _Pending:
    item: ReceivedInstance
    future: Future[StoreOutcome]


class CommitterStopped(RuntimeError):
    """The receiver is stopping; the instance was not committed."""


class Committer:
    """Commits received rows in groups on its own thread, so C-STOREs share one commit."""
    def __init__(
        self, hub: Hub, *, stable_age: float, overwrite: bool, max_batch: int = 64
    ) -> None:
        self.hub = hub
        self.stable_age = stable_age
        self.overwrite = overwrite
        self.max_batch = max_batch
        self._pending: list[_Pending] = []
        self._ready = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # the vethub_instance_stored of committed batches, oldest first, not yet known fired
        self._firing: deque[Future[None]] = deque()
        self.batches = 0
        self.committed = 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the commit thread; once started, starting again does nothing."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._loop = loop
        self._stopping = False
        filer = InstanceFiler(self.hub, loop, stable_age=self.stable_age, overwrite=self.overwrite)
        self._thread = threading.Thread(
            target=self._run, args=(filer,), name="vethub-dicom-commit", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Blocking (call it off the event loop): finish the batch in hand, fail the rest."""
        with self._ready:
            self._stopping = True
            pending, self._pending = self._pending, []
            self._ready.notify()
        for p in pending:
            _fail(p, CommitterStopped("the receiver is stopping"))
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def submit_nowait(self, item: ReceivedInstance) -> Future[StoreOutcome]:
        """Queue ``item`` for filing; the future ends once its row is committed (or failed)."""
        future: Future[StoreOutcome] = Future()
        with self._ready:
            if self._stopping or self._thread is None:
                future.set_exception(CommitterStopped("the receiver is not running"))
                return future
            self._pending.append(_Pending(item, future))
            self._ready.notify()
        return future

    def submit(self, item: ReceivedInstance, timeout: float = SUBMIT_TIMEOUT) -> StoreOutcome:
        """Blocking: file ``item``; returns once its row is committed (raises if it could not be)."""
        return self.submit_nowait(item).result(timeout)

    def _run(self, filer: InstanceFiler) -> None:
        try:
            while True:
                with self._ready:
                    while not self._pending and not self._stopping:
                        self._ready.wait()
                    if self._stopping:
                        return
                    batch = self._pending[: self.max_batch]
                    del self._pending[: self.max_batch]
                self._commit(filer, batch)
        finally:
            self._wait_firing()
            filer.close()

    def _commit(self, filer: InstanceFiler, batch: list[_Pending]) -> None:
        try:
            outcomes = filer.file([p.item for p in batch])
        except Exception as err:
            if len(batch) > 1:
                log.info("batch of %d failed (%r); committing one by one", len(batch), err)
                for pending in batch:
                    self._commit(filer, [pending])
                return
            try:  # one retry: a concurrent process may have created the same study
                outcomes = filer.file([batch[0].item])
            except Exception as again:
                _fail(batch[0], again)
                return
        self.batches += 1
        self.committed += len(batch)
        for pending, outcome in zip(batch, outcomes, strict=True):
            if not pending.future.done():
                pending.future.set_result(outcome)
        self._fire_stored(batch, outcomes)

    def _fire_stored(self, batch: list[_Pending], outcomes: list[StoreOutcome]) -> None:
        """Fire ``vethub_instance_stored`` for a committed batch: one trip to the event loop
        per batch, not per instance, and not waited for here, so the next batches commit
        meanwhile (the loop is busy with the associations' caller checks; waiting for it
        held up every commit behind them). Each batch's firing awaits the previous one's on
        the loop, which keeps the events in order; the commit thread waits only when
        :data:`FIRING_BEHIND` batches are still unfired, so the loop cannot fall far behind."""
        if self._loop is None or not self.hub.pm.hook.vethub_instance_stored.get_hookimpls():
            return
        views = [_view(p.item, outcome) for p, outcome in zip(batch, outcomes, strict=True)]
        self._reap(FIRING_BEHIND - 1)
        previous = self._firing[-1] if self._firing else None
        self._firing.append(
            asyncio.run_coroutine_threadsafe(self._fire_all(views, previous), self._loop)
        )

    async def _fire_all(self, views: list[dict], previous: Future[None] | None) -> None:
        if previous is not None:
            with contextlib.suppress(Exception):  # reaped, and logged, by the commit thread
                await asyncio.wrap_future(previous)
        # Hub.fire_each logs a failing plugin; the instance is stored regardless. Every
        # listener hears the whole batch before anything is awaited, so it can serve the
        # batch with one piece of work (the accounts plugin's first-images read).
        await self.hub.fire_each(
            "vethub_instance_stored", [{"hub": self.hub, "instance": view} for view in views]
        )

    def _reap(self, keep: int) -> None:
        """Forget the fired batches; wait for the oldest until at most ``keep`` are unfired."""
        firing = self._firing
        while firing and (firing[0].done() or len(firing) > keep):
            try:
                firing.popleft().result(SUBMIT_TIMEOUT)
            except Exception:  # a plugin's failure must not fail instances, already stored
                log.exception("vethub_instance_stored failed")

    def _wait_firing(self) -> None:
        self._reap(0)


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
