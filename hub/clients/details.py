"""One client's record of truth: summary, contact, patients, and the sections that exist."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.clients.models import SurveyRequest
from hub.clients.search import client_patients
from hub.db.models import Practice
from hub.messaging.models import AddressSuppression
from hub.pims.models import Client, Patient
from hub.pims.records import ClientStatus, PatientStatus


async def email_status(session: AsyncSession, client: Client) -> str:
    """The PIMS's verification status, unless the hub's own sending says worse: an address the
    hub saw bounce is ``bounced``, one marked invalid otherwise (a provider's refusal) is
    ``invalid``."""
    if not client.email:
        return client.email_status or "unverified"
    rows = (await session.execute(
        select(AddressSuppression.source).where(
            AddressSuppression.kind == "email", AddressSuppression.address == client.email.lower(),
            AddressSuppression.reason == "invalid", AddressSuppression.active.is_(True)))).scalars()
    sources = set(rows)
    if "bounce" in sources:
        return "bounced"
    if sources:
        return "invalid"
    return client.email_status or "unverified"


def mailing_addresses(client: Client) -> list[dict[str, Any]]:
    if not client.address_line1:
        return []
    return [{"kind": "mailing", "line1": client.address_line1, "line2": client.address_line2,
             "city": client.city, "region": client.region, "postcode": client.postcode,
             "country": client.country}]


def patient_json(p: Patient) -> dict[str, Any]:
    return {"id": p.id, "practice_id": p.practice_id, "pims_id": p.external_id,
            "client_pims_id": p.client_external_id, "name": p.name, "species": p.species,
            "breed": p.breed, "sex": p.sex,
            "birth_date": p.birth_date.isoformat() if p.birth_date else None, "status": p.status}


def display_name(client: Client) -> str:
    return " ".join(p for p in (client.first_name, client.last_name) if p) or f"client {client.id}"


def survey_json(s: SurveyRequest) -> dict[str, Any]:
    return {"rating": s.rating, "comment": s.comment,
            "answered_at": s.answered_at.isoformat() if s.answered_at else None,
            "visit": s.visit_external_id}


async def client_details(session: AsyncSession, client: Client) -> dict[str, Any]:
    """The client's record; ``surveys`` only when the client answered at least one."""
    practice = await session.get(Practice, client.practice_id)
    assert practice is not None
    patients = await client_patients(session, client)
    answered = list((await session.execute(
        select(SurveyRequest).where(SurveyRequest.client_id == client.id,
                                    SurveyRequest.answered_at.is_not(None))
        .order_by(SurveyRequest.answered_at.desc(), SurveyRequest.id.desc()))).scalars())
    survey = answered[0] if answered else None
    contactable = (client.status == ClientStatus.ACTIVE and not client.comms_disabled
                   and any(p.status == PatientStatus.ACTIVE for p in patients))
    return {
        "id": client.id,
        "summary": {
            "pims_id": client.external_id,
            "status": client.status,
            "primary_practice": {"id": practice.id, "slug": practice.slug, "name": practice.name},
            "balance_due": str(client.balance) if client.balance is not None else None,
            "client_class": client.client_class,
            "comms_disabled": client.comms_disabled,
            "pet_app": client.pet_app_status,
            "contactable": contactable,
            "last_survey": None if survey is None else {
                "rating": survey.rating, "comment": survey.comment,
                "answered_at": survey.answered_at.isoformat() if survey.answered_at else None},
        },
        "contact": {
            "first_name": client.first_name, "last_name": client.last_name,
            "name": display_name(client),
            "email": client.email, "email_status": await email_status(session, client),
            "phones": {"home": client.phone_home, "work": client.phone_work,
                       "mobile": client.phone_mobile},
            "mailing_addresses": mailing_addresses(client),
        },
        "patients": [patient_json(p) for p in patients],
        **({"surveys": [survey_json(s) for s in answered]} if answered else {}),
    }
