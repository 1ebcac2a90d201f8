"""An extra receiver process: ``python -m plugins.dicom.worker --config vethub.toml``.

With ``[dicom] processes = N`` the hub starts N-1 of these beside its own receiver; all open
the listening socket with SO_REUSEPORT and the kernel spreads incoming associations across
them, so ingest uses more than one core (a pynetdicom receiver is bound to one). Each worker
has its own database engine and does exactly what the in-hub receiver does (durable file, then
committed row, then Success); it runs no job workers, web app or other plugins. It exits on
SIGTERM, and when its parent hub dies.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import signal
import sys

from hub.config import load_config
from hub.core import create_hub

from .receiver import DicomReceiver

log = logging.getLogger("plugins.dicom.worker")


def _die_with_parent() -> None:
    try:  # Linux: SIGTERM when the parent exits, even by SIGKILL
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


async def _run(config_path: str, parent: int) -> int:
    config = load_config(config_path)
    section = config.section("dicom")
    if section is None:
        log.error("%s has no [dicom] section", config_path)
        return 2
    hub = create_hub(config)
    await hub.prepare_database(upgrade=False)
    receiver = DicomReceiver(hub, section)
    await receiver.start(reuse_port=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        while not stop.is_set():
            if os.getppid() != parent:
                break
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    _die_with_parent()
    return asyncio.run(_run(args.config, args.parent))


if __name__ == "__main__":
    sys.exit(main())
