"""Built-in plugin wiring the imaging domain into the hub: its jobs, routes and email templates."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hub.hookspecs import hookimpl
from hub.imaging import api, dicomweb
from hub.imaging.case_status import CASE_STATUS_JOB, announce_job
from hub.imaging.service import STABILITY_JOB, check_study_stability
from hub.imaging.turnaround import TURNAROUND_JOB, check_job

if TYPE_CHECKING:
    from hub.core import Hub


@hookimpl
def vethub_job_handlers():
    return {STABILITY_JOB: check_study_stability, CASE_STATUS_JOB: announce_job,
            TURNAROUND_JOB: check_job}


@hookimpl
def vethub_web_routes(hub: Hub):
    return [*api.routes, *dicomweb.routes]


@hookimpl
def vethub_template_dirs():
    return [Path(__file__).parent / "templates"]


@hookimpl
def vethub_instance_stored(hub: Hub, instance: Any):
    """A report the company sent back by C-STORE (an SR or an Encapsulated PDF) reports its case."""
    from hub.imaging.dicom_reports import REPORT_MODALITIES, file_dicom_report

    if not isinstance(instance, dict) or instance.get("modality") not in REPORT_MODALITIES \
            or not instance.get("created"):
        return None
    return file_dicom_report(hub, int(instance["instance_id"]))
