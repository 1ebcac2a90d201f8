"""Built-in plugin: the DICOM receiver (inbound transport) and forwarder (outbound transport).

The receiver starts with the hub when the config has a ``[dicom]`` section (and
``enabled = true``, the default) and stops with it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from hub.hookspecs import hookimpl
from hub.imaging.cases import FORWARD_JOB
from hub.imaging.forwarding import case_dead
from hub.jobs import JobKind

from .config import DicomConfig
from .forwarder import forward_case
from .processes import ReceiverProcesses
from .receiver import DicomReceiver

if TYPE_CHECKING:
    from hub.core import Hub

log = logging.getLogger(__name__)

# One receiver per running hub (tests run several hubs in one process).
_receivers: WeakKeyDictionary[Hub, DicomReceiver] = WeakKeyDictionary()
_processes: WeakKeyDictionary[Hub, ReceiverProcesses] = WeakKeyDictionary()


def receiver_of(hub: Hub) -> DicomReceiver | None:
    """The hub's running receiver (its ``port`` is the bound one), or None."""
    return _receivers.get(hub)


def processes_of(hub: Hub) -> ReceiverProcesses | None:
    """The hub's extra receiver processes (``[dicom] processes`` > 1), or None."""
    return _processes.get(hub)


@hookimpl
def vethub_config_sections():
    return {"dicom": DicomConfig}


@hookimpl
def vethub_job_handlers():
    return {FORWARD_JOB: JobKind(forward_case, on_dead=case_dead)}


@hookimpl
def vethub_image_transports():
    return [DicomReceiver]


async def _start(hub: Hub, config: DicomConfig) -> None:
    receiver = DicomReceiver(hub, config)
    _receivers[hub] = receiver
    extra = config.processes - 1
    if extra and hub.config_path is None:
        log.warning(
            "[dicom] processes = %d needs the hub started from a config file, which its "
            "workers read; running one receiver",
            config.processes,
        )
        extra = 0
    if not extra:
        await receiver.start()
        return
    processes = ReceiverProcesses(hub, receiver, extra)
    _processes[hub] = processes
    await processes.start()


async def _stop(hub: Hub, receiver: DicomReceiver | None) -> None:
    processes = _processes.pop(hub, None)
    if processes is not None:
        await processes.stop()  # the hub's own receiver last
    elif receiver is not None:
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
    if receiver is None and hub not in _processes:
        return None
    return _stop(hub, receiver)
