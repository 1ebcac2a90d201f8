"""Built-in plugin: the DICOM receiver (inbound transport) and forwarder (outbound transport).

The receiver starts with the hub when the config has a ``[dicom]`` section (and
``enabled = true``, the default) and stops with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from hub.hookspecs import hookimpl
from hub.imaging.cases import FORWARD_JOB

from .config import DicomConfig
from .forwarder import forward_case
from .receiver import DicomReceiver

if TYPE_CHECKING:
    from hub.core import Hub

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


@hookimpl
def vethub_startup(hub: Hub):
    config: DicomConfig | None = hub.config.section("dicom")
    if config is None or not config.enabled:
        return None
    receiver = DicomReceiver(hub, config)
    _receivers[hub] = receiver
    return receiver.start(reuse_port=config.processes > 1)


@hookimpl
def vethub_shutdown(hub: Hub):
    receiver = _receivers.pop(hub, None)
    if receiver is None:
        return None
    return receiver.stop()
