"""Draft switch requests: a practice's written request that arrived by email, held for an
operator.

A draft is a :class:`SwitchRequest` in state ``draft``. It opens no response window, notifies
no one and changes no account; only operators see it (:mod:`hub.accounts.scope`). An operator
confirms it, which applies the same checks and the same first decision as an operator's
``POST /api/switch-requests``, or discards it with a reason, kept in the audit log. Plugins
(the inbound email one) open drafts through :func:`open_draft`, never by writing the table.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from hub import events
from hub.accounts.models import SwitchRequest, SwitchState
from hub.accounts.policy import Decision
from hub.accounts.switching import SwitchError, _step, submitted, validated
from hub.db.models import Account, AccountStatus, Company, Practice

if TYPE_CHECKING:
    from hub.core import Hub

#: the SwitchStep/audit actor of a draft read from email
EMAIL_SOURCE = "email"


async def read_company(session: AsyncSession, text: str, *, besides: set[int]) -> Company | None:
    """The one company ``text`` names (by name or slug, as whole words), leaving out ``besides``;
    None when it names none or several: a guess is left to the operator, not made here."""
    found = []
    for company in (await session.execute(select(Company).order_by(Company.id))).scalars():
        if company.id in besides:
            continue
        names = {n for n in (company.name, company.slug) if n and len(n) >= 3}
        if any(re.search(rf"(?<!\w){re.escape(n)}(?!\w)", text, re.I) for n in names):
            found.append(company)
    return found[0] if len(found) == 1 else None


async def open_draft(session: AsyncSession, hub: Hub, *, practice_id: int, statement: str,
                     statement_ref: str, requester_email: str | None, requester_name: str,
                     actor: str) -> SwitchRequest:
    """Record what a practice wrote as a draft: its account and current company when it has
    exactly one active account, the new company when the statement names exactly one other."""
    practice = await session.get(Practice, practice_id)
    if practice is None:
        raise SwitchError(422, "unknown_practice", f"no practice {practice_id}", "practice_id")
    active = list((await session.execute(
        select(Account).where(Account.practice_id == practice_id, Account.status == AccountStatus.ACTIVE)
        .order_by(Account.id))).scalars())
    account = active[0] if len(active) == 1 else None
    new = await read_company(session, statement, besides={a.company_id for a in active})
    now = hub.clock.now()
    sr = SwitchRequest(
        kind="move", practice_id=practice_id, account_id=account.id if account else None,
        current_company_id=account.company_id if account else None, new_company_id=new.id if new else None,
        modalities=[], requester_name=(requester_name.strip() or practice.name)[:200],
        requester_email=(requester_email or None), requester_authorised=False, statement=statement,
        statement_ref=statement_ref[:100], source=EMAIL_SOURCE, entered_by=actor, state=SwitchState.draft,
        requested_at=now, created_at=now, updated_at=now, response="none", operator_decision="none",
    )
    session.add(sr)
    await session.flush()
    await _step(session, hub, sr, "drafted", actor, detail={"statement_ref": sr.statement_ref})
    await events.record(session, "switch_request.draft",
                        f"{practice.name} asks in writing to switch companies: confirm or discard "
                        f"draft switch request {sr.id}", practice_id=practice_id,
                        data={"switch_request_id": sr.id, "statement_ref": sr.statement_ref})
    return sr


async def _locked_draft(session: AsyncSession, switch_id: int) -> SwitchRequest:
    sr = await session.get(SwitchRequest, switch_id, with_for_update=True, populate_existing=True)
    if sr is None:
        raise SwitchError(404, "not_found", "switch request not found")
    if sr.state != SwitchState.draft:
        raise SwitchError(409, "not_a_draft", f"switch request {sr.id} is {sr.state}, not a draft")
    return sr


async def _leave_draft(session: AsyncSession, sr: SwitchRequest, to: SwitchState, **values: Any) -> None:
    """Draft -> ``to``, once: a second operator confirming or discarding at the same time is
    refused (the row is locked, and the state checked again in the UPDATE)."""
    result = await session.execute(
        update(SwitchRequest).where(SwitchRequest.id == sr.id, SwitchRequest.state == SwitchState.draft)
        .values(state=to, **values).execution_options(synchronize_session=False))
    if cast(CursorResult[Any], result).rowcount != 1:
        raise SwitchError(409, "not_a_draft", f"switch request {sr.id} is no longer a draft")
    await session.refresh(sr)


async def confirm_draft(session: AsyncSession, hub: Hub, switch_id: int, data: Mapping[str, Any], *,
                        actor: str) -> tuple[SwitchRequest, Decision]:
    """The operator's confirmation: what ``data`` names (else what the draft read) is checked as
    a new request is, then the draft becomes ``pending`` and gets its first decision."""
    sr = await _locked_draft(session, switch_id)
    merged = {
        "current_company": data.get("current_company") or sr.current_company_id,
        "new_company": data.get("new_company") or sr.new_company_id,
        "kind": data.get("kind") or sr.kind,
        "modalities": data.get("modalities") or sr.modalities,
        "requester_name": data.get("requester_name") or sr.requester_name,
        "requester_authorised": data.get("requester_authorised"),
    }
    fields = await validated(session, merged, sr.practice_id)
    fields.pop("practice_id")
    now = hub.clock.now()
    await _leave_draft(session, sr, SwitchState.pending, **fields, entered_by=actor, requested_at=now,
                       updated_at=now)
    note = str(data.get("note") or "")
    await _step(session, hub, sr, "confirmed", actor, detail={"statement_ref": sr.statement_ref,
                                                              **({"note": note} if note else {})})
    return sr, await submitted(session, hub, sr, actor)


async def discard_draft(session: AsyncSession, hub: Hub, switch_id: int, *, reason: str,
                        actor: str) -> SwitchRequest:
    """The operator's refusal of a draft: kept, with the reason, and audited; nothing else."""
    if not reason.strip():
        raise SwitchError(422, "missing_field", "say why the draft is discarded", "reason")
    sr = await _locked_draft(session, switch_id)
    now = hub.clock.now()
    await _leave_draft(session, sr, SwitchState.discarded, reason=reason.strip(), completed_at=now,
                       updated_at=now)
    await _step(session, hub, sr, "discarded", actor, detail={"reason": sr.reason})
    return sr

