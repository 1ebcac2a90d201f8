"""Retention alerts: what staff should fix or follow up for a client and each of its patients.

Computed on request from the current rows, never stored. Staff may turn off every alert for a
client or some by code; that only hides alerts — reminders are planned from the PIMS's
reminders and the contact verdict, which never read these settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub import audit
from hub.clients.details import email_status
from hub.clients.models import AlertSettings
from hub.clients.search import client_patients
from hub.db.models import Practice
from hub.errors import Invalid
from hub.pims.models import Client, Reminder, Visit
from hub.pims.records import PatientStatus, ReminderStatus

#: a patient not seen for this long is due a nudge
NO_VISIT_AFTER = timedelta(days=548)


class AlertCode(StrEnum):
    """The problems that can be flagged on a client's record for staff to fix."""
    invalid_email = "invalid_email"  # the email is invalid or bounced
    missing_mobile = "missing_mobile"
    no_mailing_address = "no_mailing_address"
    overdue_reminder = "overdue_reminder"
    no_recent_visit = "no_recent_visit"  # last visit over 18 months ago


@dataclass(frozen=True)
class Alert:
    """One problem flagged on a client (or one of its patients), as shown to staff."""
    code: AlertCode
    message: str
    patient_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code.value, "message": self.message, "patient_id": self.patient_id}


async def settings_of(session: AsyncSession, client_id: int) -> tuple[bool, list[str]]:
    row = (await session.execute(select(AlertSettings).where(
        AlertSettings.client_id == client_id))).scalar_one_or_none()
    return (row.all_disabled, list(row.disabled)) if row else (False, [])


async def set_settings(session: AsyncSession, client: Client, *, all_disabled: bool,
                       disabled: Sequence[str], actor: str, now: datetime) -> tuple[bool, list[str]]:
    codes = sorted(set(disabled))
    unknown = [c for c in codes if c not in AlertCode.__members__]
    if unknown:
        raise Invalid(f"unknown alert code(s) {unknown}; expected some of "
                      f"{[c.value for c in AlertCode]}", field="disabled")
    row = (await session.execute(select(AlertSettings).where(
        AlertSettings.client_id == client.id))).scalar_one_or_none()
    before = {"all_disabled": row.all_disabled, "disabled": list(row.disabled)} if row else None
    if row is None:
        row = AlertSettings(client_id=client.id, practice_id=client.practice_id)
        session.add(row)
    row.all_disabled, row.disabled, row.updated_by, row.updated_at = all_disabled, codes, actor, now
    await session.flush()
    await audit.record(session, actor, "client.alert_settings", "client", client.id, before=before,
                       after={"all_disabled": all_disabled, "disabled": codes},
                       practice_id=client.practice_id)
    return all_disabled, codes


async def compute(session: AsyncSession, client: Client, now: datetime) -> list[Alert]:
    """Every alert that holds now, before the client's settings are applied."""
    practice = await session.get(Practice, client.practice_id)
    today = now.astimezone(ZoneInfo(practice.timezone if practice else "UTC")).date()
    out: list[Alert] = []
    status = await email_status(session, client)
    if client.email and status in ("invalid", "bounced"):
        out.append(Alert(AlertCode.invalid_email, f"the email {client.email} is {status}"))
    if not client.phone_mobile:
        out.append(Alert(AlertCode.missing_mobile, "no mobile phone number on file"))
    if not (client.address_line1 and (client.city or client.postcode)):
        out.append(Alert(AlertCode.no_mailing_address, "no complete mailing address on file"))
    patients = [p for p in await client_patients(session, client) if p.status == PatientStatus.ACTIVE]
    if not patients:
        return out
    by_external = {p.external_id: p for p in patients}
    overdue = await session.execute(
        select(Reminder.patient_external_id, Reminder.service, Reminder.due_date).where(
            Reminder.practice_id == client.practice_id,
            Reminder.patient_external_id.in_(sorted(by_external)),
            Reminder.status == ReminderStatus.ACTIVE, Reminder.due_date < today)
        .order_by(Reminder.due_date))
    for external_id, service, due in overdue:
        if external_id is None:
            continue
        p = by_external[external_id]
        out.append(Alert(AlertCode.overdue_reminder,
                         f"{p.name or 'patient'}: {service or 'a service'} was due on {due:%Y-%m-%d}",
                         p.id))
    visits = dict((await session.execute(
        select(Visit.patient_external_id, func.max(Visit.visited_at)).where(
            Visit.practice_id == client.practice_id,
            Visit.patient_external_id.in_(sorted(by_external)))
        .group_by(Visit.patient_external_id))).all())
    for external_id, last in visits.items():
        if last is not None and external_id is not None and now - _aware(last) > NO_VISIT_AFTER:
            p = by_external[external_id]
            out.append(Alert(AlertCode.no_recent_visit,
                             f"{p.name or 'patient'}: no visit since {last:%Y-%m-%d}", p.id))
    return out


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def alerts(session: AsyncSession, client: Client, now: datetime) -> list[Alert]:
    """The current alerts, honouring the client's alert settings."""
    all_disabled, disabled = await settings_of(session, client.id)
    if all_disabled:
        return []
    return [a for a in await compute(session, client, now) if a.code.value not in disabled]
