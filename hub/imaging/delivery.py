"""How a routed case reaches its company, and the email that tells the company it arrived.

A company whose settings name a destination that an image transport delivers to (the built-in
DICOM transport: ``settings["dicom_destination"]``, by C-STORE, images plus the request object)
gets its cases through that transport's delivery job (:mod:`hub.imaging.transport`); any other
company gets them in the hub itself: listed at ``GET /api/cases``, images as a zip and over
DICOMweb WADO-RS. Either way, once delivered, the company's reading address gets an email with
the request and a link.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db.models import Company, Practice
from hub.imaging.case_status import change_status
from hub.imaging.models import Case, CaseAttachment, CaseStatus, Delivery, Study
from hub.imaging.transport import for_destination
from hub.messaging import links
from hub.messaging.outbound import queue_email

if TYPE_CHECKING:
    from hub.core import Hub

HUB_ACTOR = "hub"


def reading_address(company: Company) -> str | None:
    """Where case notifications go: ``settings["reading_email"]``, else the company's email."""
    return (company.settings or {}).get("reading_email") or company.email


def describe(company: Company) -> str:
    """One line for ``vethub check-config`` and the operator: how this company gets cases."""
    settings = company.settings or {}
    return describe_settings(settings.get("dicom_destination"), reading_address(company))


def describe_settings(destination: dict | None, reading: str | None) -> str:
    if isinstance(destination, dict):
        how = (f"C-STORE to {destination.get('ae_title')}@{destination.get('host')}:"
               f"{destination.get('port')} (images + request object)")
    else:
        how = "in the hub (GET /api/cases, zip, DICOMweb WADO-RS at /dicomweb)"
    return f"{how}; notifications to {reading}" if reading else f"{how}; no reading address for notifications"


async def dispatch(session: AsyncSession, hub: Hub, case: Case, company: Company) -> None:
    """Start delivering a routed case (flushes): enqueue the transport's delivery job, or
    deliver in the hub."""
    transport = for_destination(hub, company.settings)
    if transport is not None and transport.delivery_job:
        case.delivery = transport.name
        job = transport.delivery_job
        await hub.jobs.enqueue(session, job, {"case_id": case.id}, idempotency_key=f"{job}:{case.id}")
        return
    case.delivery = Delivery.HUB
    await mark_delivered(session, hub, case, note="in the hub: listed, zip and DICOMweb")


async def mark_delivered(session: AsyncSession, hub: Hub, case: Case, *, note: str,
                         actor: str = HUB_ACTOR) -> None:
    """Record delivery and queue the company's notification, in the caller's transaction."""
    case.delivered_at = hub.clock.now()
    await change_status(session, hub, case, CaseStatus.DELIVERED, actor=actor, note=note)
    await notify_company(session, hub, case)


async def notify_company(session: AsyncSession, hub: Hub, case: Case) -> None:
    company = await session.get(Company, case.company_id) if case.company_id else None
    if company is None or not (to := reading_address(company)):
        return
    practice = await session.get(Practice, case.practice_id)
    study = await session.get(Study, case.study_id)
    names = (await session.execute(
        select(CaseAttachment.filename).where(CaseAttachment.case_id == case.id).order_by(CaseAttachment.id)
    )).scalars().all()
    patient = case.patient or {}
    context = {
        "case_id": case.id, "urgency": case.urgency,
        "due_at": case.due_at.strftime("%Y-%m-%d %H:%M UTC") if case.due_at else None,
        "practice_name": practice.name if practice else "", "company_name": company.name,
        "patient_name": patient.get("name"), "species": patient.get("species"),
        "owner": patient.get("owner"), "modality": study.modality if study else None,
        "instance_count": study.instance_count if study else 0,
        "study_uid": study.study_instance_uid if study else "",
        "delivered_how": describe(company).split(";")[0],
        "clinical_history": case.clinical_history, "question": case.question,
        "attachments": list(names), "case_url": links.public_url(hub, f"/api/cases/{case.id}"),
        "hub_name": hub.config.hub.name,
    }
    await queue_email(session, hub, to=to, template="case_delivered", context=context,
                      category="account", practice_id=case.practice_id, company_id=company.id)
