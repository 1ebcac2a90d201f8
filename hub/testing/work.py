"""Work in another thread that a test finishes by hand, for code that waits on
``concurrent.futures`` (e.g. the DICOM committer waiting for a file's write)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from typing import Any


class WatchedWork(Future):
    """A future the test completes itself; ``awaited`` is set once someone waits for it."""

    def __init__(self) -> None:
        super().__init__()
        self.awaited = threading.Event()

    def result(self, timeout: float | None = None) -> Any:
        self.awaited.set()
        return super().result(timeout)

    def add_done_callback(self, fn: Any) -> None:
        self.awaited.set()
        super().add_done_callback(fn)


async def until_set(event: threading.Event, what: str = "the event", deadline_s: float = 30) -> None:
    """Poll ``event`` from the event loop until it is set; fail after ``deadline_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    while not event.is_set():
        assert loop.time() < deadline, f"{what} did not happen within {deadline_s:.0f} s"
        await asyncio.sleep(0.01)
