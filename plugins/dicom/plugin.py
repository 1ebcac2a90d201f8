"""Built-in plugin: the DICOM image transport — receiver (inbound) and forwarder (outbound).

The core starts the transport with the hub (:mod:`hub.imaging.transport`); its receiver runs
when the config has a ``[dicom]`` section (and ``enabled = true``, the default). The core
enqueues the transport's ``delivery_job`` for a company whose settings hold a
``dicom_destination``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from hub.hookspecs import hookimpl
from hub.state import HubKey

from .config import DicomConfig
from .forwarder import forward_case
from .processes import ReceiverProcesses
from .receiver import DicomReceiver

if TYPE_CHECKING:
    from hub.core import Hub

log = logging.getLogger(__name__)

#: the job that forwards a routed case to its company's PACS (payload ``{"case_id"}``)
FORWARD_JOB = "dicom.forward_case"

# One receiver per running hub (tests run several hubs in one process).
RECEIVER: HubKey[DicomReceiver] = HubKey("dicom_receiver")
PROCESSES: HubKey[ReceiverProcesses] = HubKey("dicom_processes")


def receiver_of(hub: Hub) -> DicomReceiver | None:
    """The hub's running receiver (its ``port`` is the bound one), or None."""
    return hub.state.get(RECEIVER)


def processes_of(hub: Hub) -> ReceiverProcesses | None:
    """The hub's extra receiver processes (``[dicom] processes`` > 1), or None."""
    return hub.state.get(PROCESSES)


@hookimpl
def vethub_config_sections():
    return {"dicom": DicomConfig}


@hookimpl
def vethub_job_handlers():
    return {FORWARD_JOB: forward_case}


@hookimpl
def vethub_image_transports(hub: Hub) -> list[DicomTransport]:
    return [DicomTransport(hub)]


class DicomTransport:
    """The DICOM image transport: C-STORE SCP in (when ``[dicom]`` is configured and enabled),
    C-STORE SCU out to a company's ``settings["dicom_destination"]``."""

    name = "dicom"
    destination_key = "dicom_destination"
    delivery_job = FORWARD_JOB

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def start(self) -> None:
        config: DicomConfig | None = self.hub.config.section("dicom")
        if config is not None and config.enabled:
            await _start(self.hub, config)

    async def stop(self) -> None:
        receiver = self.hub.state.pop(RECEIVER)
        if receiver is not None or PROCESSES in self.hub.state:
            await _stop(self.hub, receiver)


async def _start(hub: Hub, config: DicomConfig) -> None:
    receiver = DicomReceiver(hub, config)
    hub.state[RECEIVER] = receiver
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
    hub.state[PROCESSES] = processes
    await processes.start()


async def _stop(hub: Hub, receiver: DicomReceiver | None) -> None:
    processes = hub.state.pop(PROCESSES)
    if processes is not None:
        await processes.stop()  # the hub's own receiver last
    elif receiver is not None:
        await receiver.stop()
