"""Filing received instances from a transport's own thread, without the event loop.

A transport that receives on threads of its own (the DICOM receiver: one per association)
files each batch with :meth:`InstanceFiler.file`, which blocks that thread until the batch is
committed. On SQLite the batch is one transaction on a connection of the filer's own, run in
the calling thread: handing every batch to the event loop and on to aiosqlite's thread and back
cost four thread wake-ups per batch, and on a busy loop each waited its turn (at four
associations that was a fifth of the receiver's throughput; docs/performance.md). On other
databases the batch runs as :func:`~hub.imaging.service.file_received` on the hub's loop, whose
connections already overlap their commits.

That own connection is a second SQLite writer beside the hub's pooled one: while one commits,
the other waits in SQLite's busy handler (see :func:`hub.db.engine.make_sync_sqlite_engine`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from sqlalchemy.engine import Connection, Engine, make_url

from hub.db.engine import make_sync_sqlite_engine
from hub.imaging.filing import StoreOutcome, file_instances

if TYPE_CHECKING:
    from hub.core import Hub
    from hub.imaging.service import ReceivedInstance

TIMEOUT = 60.0


class InstanceFiler:
    """Files batches of received instances; use one filer from one thread at a time."""

    def __init__(
        self, hub: Hub, loop: asyncio.AbstractEventLoop, *, stable_age: float, overwrite: bool
    ) -> None:
        self.hub = hub
        self.loop = loop
        self.stable_age = stable_age
        self.overwrite = overwrite
        # (practice id, Study Instance UID) -> study id, as committed transactions saw them
        self._study_ids: dict[tuple[int, str], int] = {}
        url = hub.config.database.url
        database = make_url(url).database
        self._engine: Engine | None = (
            make_sync_sqlite_engine(url) if hub.is_sqlite and database not in (None, "", ":memory:")
            else None
        )
        self._conn: Connection | None = None

    def file(self, items: list[ReceivedInstance], timeout: float = TIMEOUT) -> list[StoreOutcome]:
        """File ``items`` in one transaction and commit it; their outcomes, in order.

        Raises what filing raised (e.g. :class:`~hub.imaging.filing.ImagingError`); nothing of
        the batch is committed then.
        """
        study_ids = dict(self._study_ids)  # only what a committed transaction saw is kept
        if self._engine is None:
            outcomes = self._file_on_loop(items, study_ids, timeout)
        else:
            outcomes = self._file_here(items, study_ids)
        self._study_ids = study_ids if len(study_ids) <= 10_000 else {}
        return outcomes

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._engine is not None:
            self._engine.dispose()

    def _file_here(
        self, items: list[ReceivedInstance], study_ids: dict[tuple[int, str], int]
    ) -> list[StoreOutcome]:
        assert self._engine is not None
        if self._conn is None:
            self._conn = self._engine.connect()
        conn = self._conn
        try:
            with conn.begin():
                filed = file_instances(
                    conn, self.hub, items, now=self.hub.clock.now(), stable_age=self.stable_age,
                    overwrite=self.overwrite, study_ids=study_ids,
                )
        except Exception:
            if conn.invalidated or conn.closed:
                self._conn = None
            raise
        if filed.armed and self.stable_age <= 0:
            # A stability check due at once: wake this process's job workers. One due later
            # is claimed at their next poll either way (a wake only makes them look now, find
            # nothing due and sleep a whole poll interval again): that look was a database
            # query on the loop for every batch with a new study.
            self.loop.call_soon_threadsafe(self.hub.jobs.wake)
        return filed.outcomes

    def _file_on_loop(
        self, items: list[ReceivedInstance], study_ids: dict[tuple[int, str], int],
        timeout: float,
    ) -> list[StoreOutcome]:
        from hub.imaging.service import file_received

        future = asyncio.run_coroutine_threadsafe(
            file_received(
                self.hub, items, stable_age=self.stable_age, overwrite=self.overwrite,
                study_ids=study_ids,
            ),
            self.loop,
        )
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise
