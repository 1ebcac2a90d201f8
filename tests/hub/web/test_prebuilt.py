"""Routes that answer with :class:`hub.web.contract.Prebuilt` skip validating their rows into
the response model: their answers must still be exactly what the model would have written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from hub.core import Hub
from hub.db.models import Account, Practice
from hub.imaging.api_models import CaseList, case_summary
from hub.imaging.models import Case, Study
from hub.testing.fixtures_core import ApiClient
from hub.web.api_core import PracticeList, practice_json

CONFIG: dict[str, Any] = {
    "companies": [{"slug": "rads", "name": "Rads"}],
    "practices": [{"slug": "clinic-a", "name": "Clinic A", "email": "a@example.org",
                   "address": {"line1": "1 Main St", "city": "Springfield"}},
                  {"slug": "clinic-b", "name": "Clinic B"}],
    "accounts": [{"practice": "clinic-a", "company": "rads"}, {"practice": "clinic-b", "company": "rads"}],
}


@pytest.fixture
async def hub(hub_factory: Any) -> Hub:
    return await hub_factory(CONFIG)


async def _cases(hub: Hub) -> None:
    """Cases in every state that changes the summary: overdue by deadline, marked overdue,
    delivered, one with no patient data."""
    now = hub.clock.now()
    async with hub.transaction() as session:
        for practice_id, account_id, company_id in (await session.execute(
                select(Account.practice_id, Account.id, Account.company_id))).all():
            for i, (status, due, marked) in enumerate([
                    ("submitted", now - timedelta(hours=1), None),
                    ("delivered", now + timedelta(days=1), now - timedelta(minutes=5)),
                    ("reported", None, None)]):
                study = Study(practice_id=practice_id, study_instance_uid=f"1.2.3.{practice_id}.{i}",
                              modalities=["CT"], first_received_at=now, last_received_at=now)
                session.add(study)
                await session.flush()
                session.add(Case(practice_id=practice_id, study_id=study.id, account_id=account_id,
                                 company_id=company_id, status=status, submitted_by="staff:test",
                                 due_at=due, overdue_at=marked, question="fracture?",
                                 patient={"name": "Rex"} if i else {},
                                 created_at=datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)))


async def _body(caller: ApiClient, path: str) -> bytes:
    response = await caller.get(path)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    return bytes(await response.read())


async def test_the_practice_list_is_what_the_model_writes(api: ApiClient, hub: Hub) -> None:
    operator = await api.as_role("operator")
    body = await _body(operator, "/api/practices")
    async with hub.read_session() as session:
        practices = (await session.execute(select(Practice).order_by(Practice.id))).scalars().all()
        expected = PracticeList.model_validate({"items": [practice_json(p) for p in practices]})
    assert len(expected.items) == 2
    assert body == expected.model_dump_json().encode()
    PracticeList.model_validate_json(body)  # the declared model (extra="forbid") takes it


@pytest.mark.parametrize("query", ["", "?overdue=true", "?overdue=false", "?status=delivered"])
async def test_the_case_list_is_what_the_model_writes(api: ApiClient, hub: Hub, query: str) -> None:
    await _cases(hub)
    staff_practice = (await hub.read(lambda conn: conn.execute(select(Practice.id)).scalars().first()))
    for caller, scope in [(await api.as_role("operator"), None),
                          (await api.as_role("practice_staff", practice_id=staff_practice), staff_practice)]:
        body = await _body(caller, f"/api/cases{query}")
        now = hub.clock.now()
        async with hub.read_session() as session:
            stmt = select(Case).order_by(Case.id.desc())
            if scope is not None:
                stmt = stmt.where(Case.practice_id == scope)
            summaries = [case_summary(c, now) for c in (await session.execute(stmt)).scalars()]
        if "overdue" in query:
            summaries = [s for s in summaries if s.overdue == query.endswith("true")]
        if "status" in query:
            summaries = [s for s in summaries if s.status == "delivered"]
        assert summaries, "the seeded cases cover every filter"
        assert body == CaseList(items=summaries).model_dump_json().encode()
        CaseList.model_validate_json(body)
