"""Local limits of the hub's upper layer, and the events that record a refusal for one.

Every refusal for a local limit (too many associations, too many connections negotiating, an
A-ASSOCIATE-RQ over its size, a caller that never completed its request in time) is logged at
WARNING and recorded as a ``dicom.association_rejected`` event. A flood of them (a port scan,
a misbehaving client reconnecting in a loop) must not become a flood of database writes from
the threads that are supposed to turn it away, so an event is recorded at most once per
:data:`EVENT_INTERVAL` for each reason; the next one says how many were folded into it. The
event is written on the hub's event loop without waiting for it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .receiver import DicomReceiver

log = logging.getLogger(__name__)

EVENT_INTERVAL = 10.0  # seconds


class LimitEvents:
    """Refusals for a local limit: logged each, recorded at most once per interval a reason."""

    def __init__(self, receiver: DicomReceiver, interval: float = EVENT_INTERVAL) -> None:
        self.receiver = receiver
        self.interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._folded: dict[str, int] = {}

    def refused(self, reason: str, message: str, data: dict[str, Any]) -> None:
        """Log a refusal for ``reason``; record it as an event unless one was just recorded."""
        log.warning("association refused: %s", message)
        now = time.monotonic()
        with self._lock:
            last = self._last.get(reason)
            if last is not None and now - last < self.interval:
                self._folded[reason] = self._folded.get(reason, 0) + 1
                return
            self._last[reason] = now
            folded = self._folded.pop(reason, 0)
        if folded:
            message += f" (and {folded} more like it since the last such event)"
        data = {**data, "reason": reason, "folded": folded}
        future = self.receiver.acceptance.record_soon(message, data)
        if future is not None:  # None: the loop is gone or stopping
            future.add_done_callback(_log_failure)


def _log_failure(future: Any) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("could not record a refused association: %r", future.exception())
