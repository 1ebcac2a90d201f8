"""Built-in plugin: inbound email (``[inbound]``). See docs/inbound-email.md."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel

from hub.hookspecs import hookimpl
from hub.state import HubKey

from .config import InboundConfig
from .imap import ImapPoller
from .lmtp import LmtpListener
from .process import PROCESS_JOB, process_job

if TYPE_CHECKING:
    from hub.core import Hub
    from hub.jobs import JobHandler

LISTENER: HubKey[LmtpListener] = HubKey("inbound.lmtp_listener")
POLLER: HubKey[ImapPoller] = HubKey("inbound.imap_poller")


def poller_of(hub: Hub) -> ImapPoller | None:
    """The hub's running IMAP poller, or None."""
    return hub.state.get(POLLER)


def listener_of(hub: Hub) -> LmtpListener | None:
    """The hub's running LMTP listener (its ``port`` is the bound one), or None."""
    return hub.state.get(LISTENER)


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
        hub.state[LISTENER] = listener
    if config.imap is not None:
        poller = ImapPoller(hub, config, config.imap)
        poller.start()
        hub.state[POLLER] = poller


@hookimpl
async def vethub_shutdown(hub: Hub) -> None:
    poller = hub.state.pop(POLLER)
    if poller is not None:
        await poller.stop()
    listener = hub.state.pop(LISTENER)
    if listener is not None:
        await listener.stop()
