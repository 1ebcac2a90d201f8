"""The messaging domain as a built-in plugin: its config section, send job, routes, templates."""

from __future__ import annotations

import logging

from hub.hookspecs import hookimpl
from hub.jobs import JobKind
from hub.messaging.config import MessagingConfig
from hub.messaging.outbound import SEND_JOB
from hub.messaging.sending import communication_dead, send_job

log = logging.getLogger("hub.messaging")


@hookimpl
def vethub_config_sections():
    return {"messaging": MessagingConfig}


@hookimpl
def vethub_job_handlers():
    return {SEND_JOB: JobKind(send_job, on_dead=communication_dead)}


@hookimpl
def vethub_web_routes(hub):
    from hub.messaging.web import routes

    return routes


@hookimpl
def vethub_shutdown(hub) -> None:
    from hub.messaging.handoff import close_journal

    close_journal(hub)


@hookimpl
def vethub_startup(hub):
    # The sms and postcard plugins say themselves why they are off (no credentials).
    if "email" not in hub.channels:
        log.warning("email channel off: [email] backend selects no loaded plugin")
    log.info("messaging channels on: %s", ", ".join(sorted(hub.channels)) or "none")
    from hub.messaging.handoff import open_journal

    return open_journal(hub)  # read before the workers start: what a crash left accepted
