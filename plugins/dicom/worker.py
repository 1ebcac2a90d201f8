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
    await hub.prepare_database(upgrade=False)
    receiver = DicomReceiver(hub, section, committer=RelayCommitter(args.relay))
    sys.stdout.write(READY + "\n")
    sys.stdout.flush()
    if not await asyncio.to_thread(sys.stdin.readline):
        return 0  # the hub went away before the go-ahead
    await receiver.start(listener, owner=False)
    sys.stdout.write(ACCEPTING + "\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        while not stop.is_set() and os.getppid() == args.parent:
            try:
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            except TimeoutError:
                pass
    finally:
        await receiver.stop()
        await hub.engine.dispose()
    return 0


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
