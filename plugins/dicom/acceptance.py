"""Who may associate with the receiver, and how a refusal is recorded: one rule for every
:class:`~plugins.dicom.engine.AssociationEngine`.

An association is accepted when its called AE title is the hub's and its caller is known
(:func:`hub.imaging.callers.identify_caller`: a registered calling AE title, from an address
its registration allows, or any title when ``unknown_caller_practice`` takes unregistered
callers), and the storage is above its watermark. Anything else is an A-ASSOCIATE-RJ with the
matching PS3.8 reason, logged and recorded as an operator event (``dicom.association_rejected``)
before it is sent. The engine only sends it, in its own way.

An engine calls :meth:`Acceptance.decide` and :meth:`Acceptance.reject` from its
association's thread, which waits for them. On SQLite the checks run in that thread (the
caller lookup on read connections of its own, :class:`~hub.imaging.callers.CallerLookup`):
through the event loop, busy with fifty associations arriving at once, they took up to half a
second each. Elsewhere they run on the loop, where the database is; recording a rejection
always does.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from hub import events
from hub.imaging.callers import Caller, CallerLookup, CallerRefused, identify_caller
from hub.ops.refusals import Refusals

from .config import DicomConfig

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from hub.core import Hub

log = logging.getLogger(__name__)

T = TypeVar("T")

REJECTED_EVENT = "dicom.association_rejected"
LOOP_TIMEOUT = 60.0  # seconds an association's thread waits for the event loop's answer

# A-ASSOCIATE-RJ (result, source, diagnostic), PS3.8 §9.3.4
RJ_CALLING_AE = (0x01, 0x01, 0x03)  # permanent, service user, calling AE not recognised
RJ_CALLED_AE = (0x01, 0x01, 0x07)  # permanent, service user, called AE not recognised
RJ_BUSY = (0x02, 0x03, 0x01)  # transient, service provider (presentation), congestion


@dataclass(frozen=True, slots=True)
class Rejection:
    """An association refused: the A-ASSOCIATE-RJ's (result, source, diagnostic), the reason
    for the operator, and the event's data."""

    rsd: tuple[int, int, int]
    message: str
    data: dict[str, Any]


class Acceptance:
    """The accept/reject rule of a receiver, and the record of each rejection."""

    def __init__(self, hub: Hub, config: DicomConfig, root: Path, refusals: Refusals) -> None:
        self.hub = hub
        self.config = config
        self.root = root  # the storage whose watermark is checked
        self.refusals = refusals
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lookup: CallerLookup | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The event loop the checks and records run on (the receiver's, once started)."""
        self._loop = loop
        if self._lookup is None:
            self._lookup = CallerLookup(self.hub)

    async def prepare(self) -> None:
        """Open the caller lookup's connections before the first association (in a thread)."""
        if self._lookup is not None:
            await asyncio.to_thread(self._lookup.warm)

    def close(self) -> None:
        """Release the caller lookup's connections (the receiver has stopped)."""
        lookup, self._lookup = self._lookup, None
        if lookup is not None:
            lookup.close()

    # --- from an association's thread ---------------------------------------------------------

    def decide(self, calling: str, called: str, address: str) -> Caller | Rejection:
        """Blocking: the caller, if the association may go ahead; else why not."""
        data = {"calling_ae": calling, "called_ae": called, "address": address}
        if called != self.config.ae_title:
            return Rejection(
                RJ_CALLED_AE,
                f"called AE {called} is not this hub's ({self.config.ae_title}); "
                f"calling AE {calling}, from {address}",
                {**data, "reason": "called_ae"},
            )
        try:
            lookup = self._lookup
            if lookup is not None and lookup.available:
                self.refusals.guard_storage(self.root, calling)
                return lookup.identify(calling, address, fallback_practice=self._fallback())
            return self._call(self._identify(calling, address))
        except CallerRefused as err:
            return Rejection(RJ_CALLING_AE, str(err), {**data, "reason": "calling_ae"})
        except Exception as err:  # the storage watermark, or the database: try again later
            log.exception("association from %s (%s) could not be checked", calling, address)
            return Rejection(
                RJ_BUSY,
                f"calling AE {calling} from {address} could not be checked: {err}",
                {**data, "reason": "error"},
            )

    def reject(self, rejection: Rejection) -> None:
        """Blocking: record and log ``rejection``; the engine sends the A-ASSOCIATE-RJ next."""
        try:
            self._call(self._record(rejection.message, rejection.data))
        except Exception:  # the rejection still goes out; the log keeps the reason
            log.exception("could not record the rejection: %s", rejection.message)
        log.warning("association rejected: %s", rejection.message)

    def record_soon(self, message: str, data: dict[str, Any]) -> Future[None] | None:
        """Record a rejection without waiting for it (None: the loop is gone or stopping)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return None
        try:
            return asyncio.run_coroutine_threadsafe(self._record(message, data), loop)
        except RuntimeError:  # the loop is stopping
            return None

    # --- on the event loop --------------------------------------------------------------------

    async def _identify(self, calling: str, address: str) -> Caller:
        self.refusals.guard_storage(self.root, calling)  # below the watermark: rejected, transient
        return await identify_caller(self.hub, calling, address, fallback_practice=self._fallback())

    def _fallback(self) -> str | None:
        return None if self.config.refuse_unknown_callers else self.config.unknown_caller_practice

    async def _record(self, message: str, data: dict[str, Any]) -> None:
        async with self.hub.transaction() as session:
            await events.record(session, REJECTED_EVENT, f"rejected: {message}", data=data)

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = LOOP_TIMEOUT) -> T:
        assert self._loop is not None, "the receiver has not started"
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise
