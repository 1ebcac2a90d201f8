"""Built-in plugin: the DICOM receiver (inbound transport) and forwarder (outbound transport).

The receiver starts with the hub when the config has a ``[dicom]`` section (and
``enabled = true``, the default) and stops with it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from hub.hookspecs import hookimpl
from hub.imaging.cases import FORWARD_JOB

from .config import DicomConfig
from .forwarder import forward_case
from .receiver import DicomReceiver

if TYPE_CHECKING:
    from hub.core import Hub

log = logging.getLogger(__name__)

# One receiver per running hub (tests run several hubs in one process).
_receivers: WeakKeyDictionary[Hub, DicomReceiver] = WeakKeyDictionary()


def receiver_of(hub: Hub) -> DicomReceiver | None:
    """The hub's running receiver (its ``port`` is the bound one), or None."""
    return _receivers.get(hub)


@hookimpl
def vethub_config_sections():
    return {"dicom": DicomConfig}


@hookimpl
def vethub_job_handlers():
    return {FORWARD_JOB: forward_case}


@hookimpl
def vethub_image_transports():
    return [DicomReceiver]


_workers: WeakKeyDictionary[Hub, list[asyncio.subprocess.Process]] = WeakKeyDictionary()


async def _start(hub: Hub, config: DicomConfig) -> None:
    receiver = DicomReceiver(hub, config)
    _receivers[hub] = receiver
    extra = config.processes - 1
    if extra and (hub.config_path is None or config.port == 0):
        log.warning(
            "[dicom] processes = %d needs a config file and a fixed port; running one receiver",
            config.processes,
        )
        extra = 0
    await receiver.start(reuse_port=extra > 0)
    procs = []
    for _ in range(extra):
        procs.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "plugins.dicom.worker",
                "--config",
                str(hub.config_path),
                "--parent",
                str(os.getpid()),
            )
        )
    _workers[hub] = procs
    if procs:
        log.info("started %d extra DICOM receiver processes on port %d", len(procs), config.port)


async def _stop(hub: Hub, receiver: DicomReceiver | None) -> None:
    procs = _workers.pop(hub, [])
    for proc in procs:
        if proc.returncode is None:
            proc.terminate()
    for proc in procs:
        await proc.wait()
    if receiver is not None:
        await receiver.stop()


@hookimpl
def vethub_startup(hub: Hub):
    config: DicomConfig | None = hub.config.section("dicom")
    if config is None or not config.enabled:
        return None
    return _start(hub, config)


@hookimpl
def vethub_shutdown(hub: Hub):
    receiver = _receivers.pop(hub, None)
    if receiver is None and hub not in _workers:
        return None
    return _stop(hub, receiver)
