"""Refused DICOM instances: a log line and a count for each, an operator event per reason.

A modality re-sends a refused study over and over; an event per instance would bury the
operator. So every refusal is logged and counted (``vethub_dicom_refusals_total{status,
reason}``), and an operator event (``dicom.instance_refused``) is written for the first refusal
of a reason and then at most once per ``window`` seconds, with the count in between.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from hub.ops.metrics import DICOM_REFUSALS

log = logging.getLogger(__name__)

EVENT = "dicom.instance_refused"
#: a write refused while the storage root has less than this free is taken for a full disk
#: (the C-STORE comment, cut at 64 characters, may have lost the "No space left" of ENOSPC)
DISK_FULL_SLACK = 64 * 1024**2


def classify(status: int, comment: str) -> str:
    """The reason label of a refused C-STORE, from its status and error comment."""
    text = comment.lower()
    if "another practice" in text:
        return "duplicate_other_practice"
    if "watermark" in text:
        return "disk_low"
    if "no space" in text or "quota" in text:
        return "disk"
    if "database" in text:
        return "database"
    if status == 0x0124 or "not identified" in text:
        return "not_authorised"
    if 0xA700 <= status <= 0xA7FF:
        return "io"
    if 0xA900 <= status <= 0xA9FF or 0xC000 <= status <= 0xCFFF:
        return "bad_dataset"
    return "other"


def is_refusal(status: int) -> bool:
    return status != 0 and not 0xB000 <= status <= 0xBFFF  # 0xBxxx: stored, with a warning


class Refusals:
    """Thread-safe: called from association threads; events are written on the hub's loop."""

    def __init__(self, hub: Any, window: float = 60.0) -> None:
        self.hub = hub
        self.window = window
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._unreported: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def refused(self, status: int, comment: str, *, practice_id: int | None, calling_ae: str,
                sop_instance_uid: str = "", status_label: str | None = None, root: Any = None) -> str:
        reason = classify(status, comment)
        if reason == "io" and root is not None:
            from hub.ops.storage import free_bytes

            try:
                if free_bytes(root) < DISK_FULL_SLACK:
                    reason = "disk"
            except OSError:
                pass
        DICOM_REFUSALS.labels(status_label or f"0x{status:04X}", reason).inc()
        log.warning("C-STORE refused (0x%04X, %s) from %s: %s", status, reason, calling_ae, comment,
                    extra={"vethub": {"event": EVENT, "reason": reason, "status": f"0x{status:04X}",
                                      "calling_ae": calling_ae, "practice_id": practice_id,
                                      "sop_instance_uid": sop_instance_uid}})
        now = time.monotonic()
        with self._lock:
            count = self._unreported.get(reason, 0) + 1
            last = self._last.get(reason)
            due = last is None or now - last >= self.window
            if due:
                self._last[reason], self._unreported[reason] = now, 0
            else:
                self._unreported[reason] = count
        if due and self._loop is not None and not self._loop.is_closed():
            data = {"status": f"0x{status:04X}", "calling_ae": calling_ae, "count": count,
                    "comment": comment[:200]}
            message = (f"instance(s) from {calling_ae} refused (0x{status:04X}, {reason}): {comment}"
                       + (f" ({count} since the last event)" if count > 1 else ""))
            asyncio.run_coroutine_threadsafe(self._record(message, practice_id, reason, data), self._loop)
        return reason

    async def _record(self, message: str, practice_id: int | None, reason: str, data: dict[str, Any]) -> None:
        from hub import events

        try:
            async with self.hub.transaction() as session:
                await events.record(session, EVENT, message, practice_id=practice_id, reason=reason,
                                    data=data, level=logging.WARNING)
        except Exception:  # the database may be why it was refused; the log line stands
            log.warning("could not record the refusal event: %s", message)

    def guard_storage(self, root: Any, calling_ae: str) -> None:
        """Before an association is accepted: raise :class:`hub.ops.storage.StorageLow` when
        ``root`` is below the watermark (the receiver then rejects it transiently), counted
        and reported like a refused instance."""
        from hub.ops.config import operations_config
        from hub.ops.storage import StorageLow, storage_low

        why = storage_low(root, operations_config(self.hub).min_free_bytes)
        if why is None:
            return
        self.refused(0xA700, why, practice_id=None, calling_ae=calling_ae, status_label="A-ASSOCIATE-RJ")
        raise StorageLow(why)
