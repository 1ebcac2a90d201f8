"""Group commit: writes that arrive together share one transaction.

The send job writes twice per message (before the send and after it). One transaction each
costs, per message, a pool checkout, BEGIN and COMMIT (on SQLite a hand-off to the database's
thread; on PostgreSQL round trips and a WAL flush) — more than the statements themselves. A
worker's claimed batch starts its jobs in the same loop turn, and their sends finish close
together, so their writes can share a transaction: each caller still waits until its own write
has committed, so nothing is reported written that is not.

A batch that fails is written again one item at a time, so one bad item fails only its own
caller. Like :func:`~hub.db.transactions.run_transaction`, cancelling a caller does not take
its item out of a batch already being written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from sqlalchemy.engine import Connection

from hub.db.transactions import run_transaction

I = TypeVar("I")  # noqa: E741 - an item, as R is a result
R = TypeVar("R")

#: ``write(connection, items)``: one result per item, in order, inside an open transaction
WriteMany = Callable[[Connection, list[I]], list[R]]


class GroupCommit(Generic[I, R]):
    """Collects items written in the same loop turn (and while a batch is being written) and
    writes each batch with ``write_many`` in one transaction on ``hub.engine``."""

    MAX_BATCH = 500

    def __init__(self, hub: Any, write_many: WriteMany[I, R]) -> None:
        self.hub = hub
        self.write_many = write_many
        self._pending: list[tuple[I, asyncio.Future[R]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def write(self, item: I) -> R:
        """Write ``item`` with whatever else is written now; returns its result once committed."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._pending:
            await asyncio.sleep(0)  # let writers of the same loop turn join this batch
            batch, self._pending = self._pending[: self.MAX_BATCH], self._pending[self.MAX_BATCH :]
            try:
                results = await self._write([item for item, _ in batch])
            except Exception as err:
                if len(batch) == 1:
                    _fail(batch[0][1], err)
                    continue
                for item, future in batch:  # each alone: one bad item fails only its caller
                    try:
                        [result] = await self._write([item])
                    except Exception as one_err:  # noqa: BLE001 - handed to its caller
                        _fail(future, one_err)
                    else:
                        _resolve(future, result)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                _resolve(future, result)

    async def _write(self, items: list[I]) -> list[R]:
        return await run_transaction(self.hub.engine, lambda conn: self.write_many(conn, items))


def _resolve(future: asyncio.Future[R], result: R) -> None:
    if not future.done():  # done: its caller was cancelled
        future.set_result(result)


def _fail(future: asyncio.Future[Any], err: Exception) -> None:
    if not future.done():
        future.set_exception(err)
