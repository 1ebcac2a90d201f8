"""Built-in plugin wiring the imaging domain into the hub: its job and its API routes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hub.hookspecs import hookimpl
from hub.imaging import api
from hub.imaging.service import STABILITY_JOB, check_study_stability

if TYPE_CHECKING:
    from hub.core import Hub


@hookimpl
def vethub_job_handlers():
    return {STABILITY_JOB: check_study_stability}


@hookimpl
def vethub_web_routes(hub: Hub):
    return api.routes()
