"""Surveys after visits: one per visit the PIMS sync brought in, a rating 1–5 and an optional
comment through a signed link that needs no login.

The periodic reminder job also sends surveys: for each practice with surveys on, every visit of
the last ``survey_window_days`` that has no survey yet gets a :class:`SurveyRequest` row
(``INSERT … ON CONFLICT DO NOTHING RETURNING``: once, whichever hub runs) and a communication
in category ``survey`` through the contact verdict (email, then SMS).

The link is signed with the hub's secret for the purpose ``survey`` and expires. **A survey is
answered once**: a second answer is refused (409) and the first one stands, so a forwarded or
replayed link cannot change what the client said.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import and_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from hub.clients.config import clients_config
from hub.clients.models import SurveyRequest, SurveyStatus
from hub.db.models import Practice
from hub.errors import Conflict, Gone, Invalid, NotFound
from hub.messaging import links
from hub.messaging.outbound import queue_many
from hub.pims.models import Client, Patient, Visit

PURPOSE = "survey"
CHANNELS = ("email", "sms")


@dataclass(frozen=True)
class SurveyView:
    """What the survey page shows about one survey request, and whether it is already answered."""
    id: int
    client_name: str
    practice_name: str
    visited_at: datetime | None
    answered: bool


def token_for(hub: Any, survey_id: int, now: datetime) -> str:
    days = clients_config(hub).survey_link_days
    return links.sign(links.secret_of(hub), PURPOSE, {"s": survey_id}, now + timedelta(days=days))


def survey_url(hub: Any, survey_id: int, now: datetime) -> str:
    return links.public_url(hub, f"/surveys/{token_for(hub, survey_id, now)}")


async def send_surveys(hub: Any, practice: Practice) -> int:
    """Queue a survey for each recent visit without one; returns how many this run wrote."""
    cfg = clients_config(hub)
    if not cfg.practice(practice.slug).surveys:
        return 0
    now = hub.clock.now()
    async with hub.transaction() as session:
        visits = (await session.execute(
            select(Visit, Client.id, Patient.name)
            .join(Client, and_(Client.practice_id == Visit.practice_id,
                               Client.external_id == Visit.client_external_id))
            .outerjoin(Patient, and_(Patient.practice_id == Visit.practice_id,
                                     Patient.external_id == Visit.patient_external_id))
            .outerjoin(SurveyRequest, and_(SurveyRequest.practice_id == Visit.practice_id,
                                           SurveyRequest.visit_external_id == Visit.external_id))
            .where(Visit.practice_id == practice.id, SurveyRequest.id.is_(None),
                   Visit.visited_at >= now - timedelta(days=cfg.survey_window_days),
                   Visit.visited_at <= now)
            .order_by(Visit.visited_at))).all()
        if not visits:
            return 0
        insert = pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert
        # Every visit gets its row (so no later run asks about it again); a client with two
        # pets seen the same day gets one message, about the latest visit.
        won: dict[int, tuple[int, str | None]] = {}
        for visit, client_id, pet in visits:
            row = (await session.execute(
                insert(SurveyRequest).values(
                    practice_id=practice.id, client_id=client_id,
                    visit_external_id=visit.external_id, visited_at=visit.visited_at,
                    status=SurveyStatus.skipped, created_at=now)
                .on_conflict_do_nothing(index_elements=["practice_id", "visit_external_id"])
                .returning(SurveyRequest.id))).first()
            if row is not None:
                won[client_id] = (row[0], pet)
        if not won:
            return 0
        comms = await queue_many(
            session, hub, client_ids=list(won), template="survey", category="survey",
            channels=CHANNELS, created_by=f"surveys:{practice.slug}",
            per_client_context={cid: {"survey_url": survey_url(hub, sid, now),
                                      "patient_name": pet or "your pet"}
                                for cid, (sid, pet) in won.items()})
        for comm in comms:
            assert comm.client_id is not None  # queued per client above
            sid = won[comm.client_id][0]
            await session.execute(update(SurveyRequest).where(SurveyRequest.id == sid).values(
                communication_id=comm.id, status=comm.status))
    return len(won)


def _survey_id(hub: Any, token: str) -> int:
    try:
        data = links.verify(links.secret_of(hub), PURPOSE, token, hub.clock.now())
    except links.BadToken as err:
        if str(err) == "expired":
            raise Gone("this survey link has expired", code="survey_expired") from err
        raise NotFound("this survey link is not valid", code="survey_link_invalid") from err
    if not isinstance(data.get("s"), int):
        raise NotFound("this survey link is not valid", code="survey_link_invalid")
    return int(data["s"])


async def view(session: AsyncSession, hub: Any, token: str) -> SurveyView:
    survey = await session.get(SurveyRequest, _survey_id(hub, token))
    if survey is None:
        raise NotFound("this survey link is not valid", code="survey_link_invalid")
    client = await session.get(Client, survey.client_id)
    practice = await session.get(Practice, survey.practice_id)
    name = " ".join(p for p in (client.first_name, client.last_name) if p) if client else ""
    return SurveyView(survey.id, name or "there", practice.name if practice else "",
                      survey.visited_at, survey.answered_at is not None)


async def answer(session: AsyncSession, hub: Any, token: str, rating: int,
                 comment: str | None) -> SurveyRequest:
    """Store the answer; a survey already answered is refused (the first answer stands)."""
    if not 1 <= rating <= 5:
        raise Invalid("rating must be 1 to 5", field="rating")
    survey_id = _survey_id(hub, token)
    comment = (comment or "").strip()[:2000] or None
    now = hub.clock.now()
    # one conditional UPDATE: two answers racing cannot both win
    done = await session.execute(
        update(SurveyRequest).where(SurveyRequest.id == survey_id,
                                    SurveyRequest.answered_at.is_(None))
        .values(rating=rating, comment=comment, answered_at=now, status=SurveyStatus.answered))
    survey = await session.get(SurveyRequest, survey_id, populate_existing=True)
    if survey is None:
        raise NotFound("this survey link is not valid", code="survey_link_invalid")
    if cast(CursorResult[Any], done).rowcount == 0:
        raise Conflict("this survey was already answered; the first answer stands",
                       code="survey_answered")
    return survey


async def responses(session: AsyncSession, client_id: int) -> list[SurveyRequest]:
    return list((await session.execute(
        select(SurveyRequest).where(SurveyRequest.client_id == client_id,
                                    SurveyRequest.answered_at.is_not(None))
        .order_by(SurveyRequest.answered_at.desc(), SurveyRequest.id.desc()))).scalars())
