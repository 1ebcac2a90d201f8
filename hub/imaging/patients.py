"""Which patient a case is about: the synced PIMS patient when one matches, else the DICOM header.

A practice may name the PIMS patient (``pims_patient_id``); otherwise the study's Patient ID
is looked up among the practice's synced patients by their PIMS id. What is shown to the
company is a small dict, ``source`` saying where it came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.errors import NotFound
from hub.imaging.models import Study
from hub.pims.models import Client, Patient


@dataclass(frozen=True, slots=True)
class MatchedPatient:
    """The patient shown on a case (from the PIMS or the DICOM header), and its PIMS id if any."""
    shown: dict[str, Any]
    pims_patient_id: int | None


def _owner_name(client: Client | None) -> str | None:
    if client is None:
        return None
    return " ".join(p for p in (client.first_name, client.last_name) if p) or None


async def match_patient(
    session: AsyncSession, study: Study, pims_patient_id: int | None
) -> MatchedPatient:
    """The patient for a case on ``study``; 404 when the named PIMS patient is not the
    practice's (another practice's patient answers exactly like a missing one)."""
    patient: Patient | None = None
    if pims_patient_id is not None:
        patient = await session.get(Patient, pims_patient_id)
        if patient is None or patient.practice_id != study.practice_id:
            raise NotFound.of("patient")
    elif study.animal_id:
        patient = (await session.execute(
            select(Patient).where(Patient.practice_id == study.practice_id,
                                  Patient.external_id == study.animal_id).limit(1)
        )).scalar_one_or_none()
    if patient is None:
        return MatchedPatient({
            "source": "dicom", "name": study.animal_name, "patient_id": study.animal_id,
            "species": study.species, "owner": study.responsible_person,
        }, None)
    client = await owner_of(session, patient)
    return MatchedPatient({
        "source": "pims", "name": patient.name, "patient_id": patient.external_id,
        "species": patient.species, "breed": patient.breed, "owner": _owner_name(client),
        "dicom_name": study.animal_name, "dicom_patient_id": study.animal_id,
    }, patient.id)


async def owner_of(session: AsyncSession, patient: Patient) -> Client | None:
    if not patient.client_external_id:
        return None
    return (await session.execute(
        select(Client).where(Client.practice_id == patient.practice_id,
                             Client.external_id == patient.client_external_id).limit(1)
    )).scalar_one_or_none()
