"""The messaging domain as a built-in plugin: its config section, send job, routes, templates."""

from __future__ import annotations

import logging

from hub.hookspecs import hookimpl
from hub.messaging.config import MessagingConfig
from hub.messaging.outbound import SEND_JOB
from hub.messaging.sending import send_job

log = logging.getLogger("hub.messaging")


@hookimpl
def vethub_config_sections():
    return {"messaging": MessagingConfig}


@hookimpl
def vethub_job_handlers():
    return {SEND_JOB: send_job}


@hookimpl
def vethub_web_routes(hub):
    from hub.messaging.web import routes

    return routes


@hookimpl
def vethub_startup(hub) -> None:
    have = sorted(hub.channels)
    for name in ("email", "sms", "postcard"):
        if name not in hub.channels:
            log.info("%s channel off: not configured (no section or no credentials)", name)
    log.info("messaging channels on: %s", ", ".join(have) or "none")
