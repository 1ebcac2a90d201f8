"""Built-in plugin: inbound email (``[inbound]``). See docs/inbound-email.md."""

from __future__ import annotations

from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from pydantic import BaseModel

from hub.hookspecs import hookimpl

from .config import InboundConfig
from .imap import ImapPoller
from .lmtp import LmtpListener
from .process import PROCESS_JOB, process_job

if TYPE_CHECKING:
    from hub.core import Hub
    from hub.jobs import JobHandler

_listeners: WeakKeyDictionary[Hub, LmtpListener] = WeakKeyDictionary()
_pollers: WeakKeyDictionary[Hub, ImapPoller] = WeakKeyDictionary()


def poller_of(hub: Hub) -> ImapPoller | None:
    """The hub's running IMAP poller, or None."""
    return _pollers.get(hub)


def listener_of(hub: Hub) -> LmtpListener | None:
    """The hub's running LMTP listener (its ``port`` is the bound one), or None."""
    return _listeners.get(hub)


@hookimpl
def vethub_config_sections() -> dict[str, type[BaseModel]]:
    return {"inbound": InboundConfig}


@hookimpl
def vethub_job_handlers() -> dict[str, JobHandler]:
    return {PROCESS_JOB: process_job}


@hookimpl
async def vethub_startup(hub: Hub) -> None:
    config = hub.config.section("inbound")
    if not isinstance(config, InboundConfig) or not config.enabled:
        return
    if config.lmtp:
        listener = LmtpListener(hub, config)
        await listener.start()
        _listeners[hub] = listener
    if config.imap is not None:
        poller = ImapPoller(hub, config, config.imap)
        poller.start()
        _pollers[hub] = poller


@hookimpl
async def vethub_shutdown(hub: Hub) -> None:
    poller = _pollers.pop(hub, None)
    if poller is not None:
        await poller.stop()
    listener = _listeners.pop(hub, None)
    if listener is not None:
        await listener.stop()
