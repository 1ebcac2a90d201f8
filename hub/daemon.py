"""`vethub run`: the HTTP server, workers, scheduler and plugins until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import cast

from aiohttp import web

from hub.config import HubConfig
from hub.core import create_hub
from hub.ops.heap import freeze_startup_objects
from hub.ops.startup import preflight
from hub.web.app import create_app

log = logging.getLogger(__name__)


async def serve(config: HubConfig, *, host: str | None = None, port: int | None = None) -> None:
    """Run until a stop signal; then stop taking work, let in-flight jobs finish, exit cleanly."""
    hub = create_hub(config)
    preflight(hub)  # the database file, data dir and image store, named with their keys
    app = create_app(hub)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    # Frozen before the set-up starts the listeners (the DICOM receiver's among them): the
    # full collection holds the GIL for a tenth of a second or more, and a modality
    # connecting during it waited that long. What the set-up makes is collected and frozen
    # below, a pass of a few milliseconds.
    freeze_startup_objects()
    await runner.setup()  # runs the cleanup contexts' start-up: hub, plugins, workers
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(runner, host or config.http.host, config.http.port if port is None else port)
        await site.start()
        freeze_startup_objects()
        server = cast("asyncio.Server | None", site._server)  # noqa: SLF001 - the bound port for port 0
        for sock in server.sockets if server else ():
            addr = sock.getsockname()
            log.info("listening on http://%s:%s", addr[0], addr[1])
            print(f"vethub: listening on http://{addr[0]}:{addr[1]}", flush=True)
        enabled = ", ".join(sorted(name for name, _ in hub.pm.list_name_plugin())) or "none"
        log.info("plugins enabled: %s", enabled)
        await stop.wait()
        log.info("stop signal received; finishing in-flight work")
    finally:
        await runner.cleanup()  # stops workers (grace period), plugins, the hub
        log.info("stopped")
