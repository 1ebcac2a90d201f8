"""``[dicom] processes = N``: the hub process's side of N-1 extra receiver processes.

The hub binds the listening socket, starts the workers (:mod:`plugins.dicom.worker`) with that
socket and the relay's path (:mod:`plugins.dicom.relay`), and waits until each says it is
ready. Only then does the socket listen and every process start accepting, so once the port
answers, every receiver is ready. Stopping runs the other way: the hub stops accepting (in
every process, since they share the socket), stops the workers, whose last rows still reach
the relay, and then stops its own associations and committer. A worker that dies meanwhile is
started again; the associations it had in progress are lost to their senders, which got no
Success for what was not committed, and none waiting in the backlog is lost.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from typing import TYPE_CHECKING

from .association import BACKLOG, bound_socket
from .committer import Committer
from .relay import RelayServer
from .worker import ACCEPTING, READY

if TYPE_CHECKING:
    from hub.core import Hub

    from .receiver import DicomReceiver

log = logging.getLogger(__name__)

START_TIMEOUT = 60.0  # seconds for a worker to import, open the database and say it is ready
STOP_TIMEOUT = 30.0
RESTART_DELAY = 1.0  # seconds before a dead worker is started again, so a crash cannot spin


class WorkerStartError(RuntimeError):
    """An extra receiver process did not start; the hub does not start either."""


class ReceiverProcesses:
    """Starts and watches the extra receiver processes, relaying their rows to our committer."""
    def __init__(self, hub: Hub, receiver: DicomReceiver, count: int) -> None:
        self.hub = hub
        self.receiver = receiver
        self.count = count
        if not isinstance(receiver.committer, Committer):
            raise TypeError("the hub process's receiver must commit its rows itself")
        self.relay = RelayServer(receiver.committer)
        self.procs: list[asyncio.subprocess.Process] = []
        self.restarts = 0
        self._listener: socket.socket | None = None
        self._relay_path: os.PathLike[str] | None = None
        self._watchers: list[asyncio.Task[None]] = []
        self._stopping = False

    async def start(self) -> None:
        config = self.receiver.config
        self.receiver.committer.start(asyncio.get_running_loop())  # the workers' rows need it
        listener = self._listener = bound_socket(config.host, config.port)
        try:
            self._relay_path = await asyncio.to_thread(self.relay.start)
            self.procs = [await self._spawn() for _ in range(self.count)]
            for proc in self.procs:
                await _ready(proc)
            listener.listen(BACKLOG)
            await self.receiver.start(listener)
            for proc in self.procs:
                await _accept(proc)
        except BaseException:
            await self.stop()
            raise
        self._watchers = [asyncio.create_task(self._watch(i)) for i in range(self.count)]
        log.info(
            "DICOM receiver: %d processes accepting on port %s", self.count + 1, self.receiver.port
        )

    async def stop(self) -> None:
        self._stopping = True
        for watcher in self._watchers:
            watcher.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        await self.receiver.stop_accepting()
        if self._listener is not None and self.receiver.port is None:
            self._listener.close()  # start() failed before the receiver took it over
        for proc in self.procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                log.error("DICOM receiver process %d did not stop; killing it", proc.pid)
                proc.kill()
                await proc.wait()
        await asyncio.to_thread(self.relay.stop)
        await self.receiver.stop()

    async def _watch(self, index: int) -> None:
        """Start the worker in slot ``index`` again whenever it exits before stop()."""
        while not self._stopping:
            proc = self.procs[index]
            code = await proc.wait()
            if self._stopping:
                return
            log.error(
                "DICOM receiver process %d exited (code %s); starting another", proc.pid, code
            )
            await asyncio.sleep(RESTART_DELAY)
            if self._stopping:
                return
            try:
                fresh = self.procs[index] = await self._spawn()
            except OSError as err:
                log.error("could not start a DICOM receiver process: %s", err)
                continue  # the dead one's wait() returns at once: try again after the delay
            try:
                await _ready(fresh)
                await _accept(fresh)
            except (OSError, WorkerStartError) as err:
                log.error("%s; killing it", err)
                if fresh.returncode is None:
                    fresh.kill()
                continue
            self.restarts += 1
            log.warning("DICOM receiver process %d accepting in place of %d", fresh.pid, proc.pid)

    async def _spawn(self) -> asyncio.subprocess.Process:
        assert self._listener is not None and self._relay_path is not None
        listen_fd, relay = self._listener.fileno(), self._relay_path
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "plugins.dicom.worker",
            "--config", str(self.hub.config_path),
            "--parent", str(os.getpid()),
            "--relay", str(relay),
            "--listen-fd", str(listen_fd),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            pass_fds=(listen_fd,),
        )  # fmt: skip


async def _accept(proc: asyncio.subprocess.Process) -> None:
    """The go-ahead; returns once the worker is accepting."""
    assert proc.stdin is not None
    proc.stdin.write(b"accept\n")
    await proc.stdin.drain()
    await _expect(proc, ACCEPTING)


async def _ready(proc: asyncio.subprocess.Process) -> None:
    await _expect(proc, READY)


async def _expect(proc: asyncio.subprocess.Process, line: str) -> None:
    assert proc.stdout is not None
    try:
        got = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT)
    except TimeoutError:
        got = b""
    if got.decode(errors="replace").strip() == line:
        return
    if not got:  # end of its output: it has exited, or is about to
        try:
            code = await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            code = None
        if code is not None:
            raise WorkerStartError(
                f"DICOM receiver process {proc.pid} exited with code {code} before it was "
                "ready; its log is above"
            )
    raise WorkerStartError(
        f"DICOM receiver process {proc.pid} did not say {line!r} within "
        f"{START_TIMEOUT:.0f} s (it said {got[:200]!r})"
    )
