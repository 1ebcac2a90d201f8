"""An extra receiver process: ``python -m plugins.dicom.worker --config vethub.toml ...``.

With ``[dicom] processes = N`` the hub starts N-1 of these beside its own receiver, so ingest
uses more than one core (the association threads of one process share one GIL). The hub binds
the listening socket and each worker inherits it (``--listen-fd``): every process blocks in
accept() on the same socket and the kernel hands each new association to the one that has
waited longest, so associations go round the processes in turn.

Each worker writes each instance's file durably itself and sends its row to the hub process,
whose one committer files it (:mod:`plugins.dicom.relay`), before it says Success. It reads
the database only to check who is calling; it runs no job workers, web app or other plugins.

Start-up is a handshake on its standard streams: once ready it prints :data:`READY`; it
starts accepting when the hub writes a line to its standard input, which the hub does once
every worker is ready and the socket listens, and then prints :data:`ACCEPTING`. It exits on SIGTERM, and when the hub dies.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import signal
import socket
import sys

from hub.config import ConfigError, load_config
from hub.core import create_hub
from hub.ops.heap import freeze_startup_objects

from .receiver import DicomReceiver
from .relay import RelayCommitter

log = logging.getLogger("plugins.dicom.worker")

READY = "vethub-dicom-worker ready"
ACCEPTING = "vethub-dicom-worker accepting"


def _die_with_parent() -> None:
    try:  # Linux: SIGTERM when the parent exits, even by SIGKILL
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


async def _run(args: argparse.Namespace) -> int:
    # Signals first: a SIGTERM during start-up (the hub stopping at once) ends it cleanly too.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        config = load_config(args.config)
    except ConfigError as err:
        log.error("%s", err)
        return 2
    section = config.section("dicom")
    if section is None:
        log.error("%s has no [dicom] section", args.config)
        return 2
    listener = socket.socket(fileno=args.listen_fd)
    hub = create_hub(config)
    receiver = DicomReceiver(hub, section, committer=RelayCommitter(args.relay))
    try:
        await hub.prepare_database(upgrade=False)
        # Before READY, not once accepting: the full collection holds the GIL, and the
        # associations this process accepted first waited for it (docs/performance.md).
        freeze_startup_objects()
        _say(READY)
        if not await _go_ahead(stop):
            return 0  # stopped, or the hub went away, before the go-ahead
        await receiver.start(listener, owner=False)
        _say(ACCEPTING)
        while not stop.is_set() and os.getppid() == args.parent:
            try:
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            except TimeoutError:
                pass
    finally:
        await receiver.stop()
        await hub.engine.dispose()
    return 0


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _go_ahead(stop: asyncio.Event) -> bool:
    """True once the hub writes its go-ahead line; False if it closes its end of the pipe or
    ``stop`` is set first."""
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    line = asyncio.ensure_future(reader.readline())
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({line, stopped}, return_when=asyncio.FIRST_COMPLETED)
    for task in (line, stopped):
        task.cancel()
    await asyncio.gather(line, stopped, return_exceptions=True)
    return not stop.is_set() and not line.cancelled() and bool(line.result())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m plugins.dicom.worker")
    parser.add_argument("--config", required=True)
    parser.add_argument("--parent", type=int, default=os.getppid())
    parser.add_argument("--relay", required=True, help="the hub process's commit socket")
    parser.add_argument("--listen-fd", type=int, required=True, help="the inherited listener")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    _die_with_parent()
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
