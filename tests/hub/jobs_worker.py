"""A job worker process for the job-queue tests: ``python jobs_worker.py CONFIG LOG MODE``.

It builds a hub from CONFIG with one extra plugin whose handlers append a line to LOG (opened
with O_APPEND and fsynced, so a line written before a SIGKILL is on disk), starts the hub's
workers and runs until SIGTERM. MODE:

- ``block``: ``t.crash`` records ``started`` and then waits forever (to be SIGKILLed);
- ``finish``: ``t.crash`` records ``started`` then ``done``.

``t.record`` inserts ``(job_id, pid)`` into the table ``job_runs`` (no unique constraint, so
a job run twice shows up as two rows); the test creates that table.

When the workers run, the file ``LOG.ready.<pid>`` is created, so the test can wait for it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import text

from hub.config import load_config
from hub.core import Hub
from hub.hookspecs import hookimpl
from hub.jobs import JobContext
from hub.plugins import get_plugin_manager


def append_line(path: Path, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


class WorkerPlugin:
    def __init__(self, log_path: Path, mode: str) -> None:
        self.log_path, self.mode = log_path, mode

    @hookimpl
    def vethub_job_handlers(self) -> dict[str, Any]:
        return {"t.crash": self.crash, "t.record": self.record}

    async def crash(self, hub: Hub, job: JobContext) -> None:
        append_line(self.log_path, f"started {job.id} {os.getpid()} attempt={job.attempts}")
        if self.mode == "block":
            await asyncio.Event().wait()
        append_line(self.log_path, f"done {job.id} {os.getpid()}")

    async def record(self, hub: Hub, job: JobContext) -> None:
        async with hub.transaction() as session:
            await session.execute(text("INSERT INTO job_runs (job_id, pid) VALUES (:j, :p)"),
                                  {"j": job.id, "p": os.getpid()})


async def main(config_path: str, log_path: str, mode: str) -> None:
    config = load_config(config_path)
    plugin = WorkerPlugin(Path(log_path), mode)
    hub = Hub(config, get_plugin_manager(config.plugins.disabled, extra=[("jobs_test_worker", plugin)]))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await hub.start(lifecycle=False)
    hub.jobs.start()
    Path(f"{log_path}.ready.{os.getpid()}").touch()
    try:
        await stop.wait()
    finally:
        await hub.stop()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
