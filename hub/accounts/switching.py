"""Switching companies: the written request, the facts for ``vethub_switch_decision``, and
carrying out what the policy decides.

Concurrency: every transition is a compare-and-set on ``switch_requests.state`` after the row
is locked (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite transactions begin IMMEDIATE, so they
are serial). Two processes deciding the same request therefore switch it exactly once: the
second finds the state already moved and does nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import func, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from hub import audit, events
from hub.accounts import history
from hub.accounts.config import switching_settings
from hub.accounts.errors import AccountsError
from hub.accounts.links import sign_response
from hub.accounts.models import SwitchRequest, SwitchState, SwitchStep, db_id
from hub.accounts.policy import CompanyResponse, Decision, OperatorDecision, Outcome, SwitchFacts
from hub.db.models import Account, AccountStatus, CallingAE, Company, Practice
from hub.messaging.outbound import queue_email

if TYPE_CHECKING:
    from hub.auth import Principal
    from hub.core import Hub

log = logging.getLogger(__name__)

OPEN_STATES = (SwitchState.pending, SwitchState.awaiting_response, SwitchState.escalated)
DEADLINE_JOB = "accounts.switch_deadline"


class SwitchError(AccountsError):
    """A switch request or a decision on one was refused."""
    pass


def _missing(field: str, what: str) -> SwitchError:
    return SwitchError(422, "missing_field", f"the request must {what}", field)


async def _company(session: AsyncSession, ref: Any, field: str) -> Company:
    if ref in (None, ""):
        raise _missing(field, f"name the {field.replace('_', ' ')}")
    if db_id(ref) is not None:
        company = await session.get(Company, int(ref))  # checked: a BIGINT id
    else:
        company = (await session.execute(select(Company).where(Company.slug == str(ref)))).scalar_one_or_none()
    if company is None:
        raise SwitchError(422, "unknown_company", f"no company {ref!r}", field)
    return company


# --- the written request --------------------------------------------------------------------------


async def create_request(
    session: AsyncSession, hub: Hub, data: Mapping[str, Any], principal: Principal
) -> tuple[SwitchRequest, Decision]:
    """Validate a written switch request, record it and apply the first decision."""
    if principal.role == "practice_staff" and principal.practice_id is not None:
        practice_id, source = principal.practice_id, "practice"
    elif principal.role == "operator":
        named = data.get("practice_id")
        if named in (None, ""):
            raise _missing("practice_id", "name the practice")
        if not str(data.get("statement") or "").strip():
            raise _missing("statement", "quote the practice's written message")
        practice_id, source = int(named), "operator"
    else:
        raise SwitchError(403, "forbidden", "a switch request is made by the practice or entered by an operator")
    fields = await validated(session, data, practice_id)
    now = hub.clock.now()
    sr = SwitchRequest(
        **fields, requester_email=(str(data.get("requester_email") or "").strip() or None),
        statement=str(data.get("statement") or ""), source=source, entered_by=principal.actor,
        state=SwitchState.pending, requested_at=now, created_at=now, updated_at=now,
        response="none", operator_decision="none",
    )
    session.add(sr)
    await session.flush()
    return sr, await submitted(session, hub, sr, principal.actor)


async def validated(session: AsyncSession, data: Mapping[str, Any], practice_id: int) -> dict[str, Any]:
    """The columns of a complete request from ``data``, or the SwitchError naming what is wrong.
    Shared by a new request and a confirmed draft, so both are held to the same rules."""
    practice = await session.get(Practice, practice_id)
    if practice is None:
        raise SwitchError(422, "unknown_practice", f"no practice {practice_id}", "practice_id")
    if not str(data.get("requester_name") or "").strip():
        raise _missing("requester_name", "name who makes it")
    if data.get("requester_authorised") is not True:
        raise _missing("requester_authorised", "state that the requester is authorised to act for the practice")
    current = await _company(session, data.get("current_company"), "current_company")
    new = await _company(session, data.get("new_company"), "new_company")
    if current.id == new.id:
        raise SwitchError(422, "same_company", "the new company is the current one", "new_company")
    kind = data.get("kind") or "move"
    if kind not in ("move", "add"):
        raise SwitchError(422, "invalid_field", "kind is 'move' or 'add'", "kind")
    modalities = sorted({str(m).strip().upper() for m in data.get("modalities") or () if str(m).strip()})
    if kind == "add" and not modalities:
        raise _missing("modalities", "list the modalities the new company is to read")
    account = (
        await session.execute(
            select(Account).where(Account.practice_id == practice.id, Account.company_id == current.id,
                                  Account.status == AccountStatus.ACTIVE)
        )
    ).scalar_one_or_none()
    if account is None:
        raise SwitchError(422, "no_account", f"the practice has no active account with {current.name}",
                          "current_company")
    open_one = await session.execute(
        select(SwitchRequest.id).where(SwitchRequest.account_id == account.id,
                                       SwitchRequest.state.in_(OPEN_STATES))
    )
    if (existing := open_one.scalar()) is not None:
        raise SwitchError(409, "already_open", f"switch request {existing} for this account is still open")
    return {"kind": kind, "practice_id": practice.id, "account_id": account.id,
            "current_company_id": current.id, "new_company_id": new.id, "modalities": modalities,
            "requester_name": str(data["requester_name"]).strip(), "requester_authorised": True}


async def submitted(session: AsyncSession, hub: Hub, sr: SwitchRequest, actor: str) -> Decision:
    """A request has just become ``pending``: record the step and apply the first decision."""
    await _step(session, hub, sr, "submitted", actor, detail=switch_json(sr))
    return await evaluate(session, hub, sr.id, actor=actor)


# --- facts and decision ----------------------------------------------------------------------------


async def last_case_at(session: AsyncSession, sr: SwitchRequest) -> datetime | None:
    """The account's last case submitted at or before the request date."""
    from hub.imaging.models import Case

    value = (
        await session.execute(
            select(func.max(Case.created_at)).where(
                Case.practice_id == sr.practice_id,
                (Case.account_id == sr.account_id) | (Case.company_id == sr.current_company_id),
                Case.created_at <= sr.requested_at,
            )
        )
    ).scalar()
    return value  # max() keeps the column's type, so this is an aware UTC datetime


async def gather_facts(session: AsyncSession, hub: Hub, sr: SwitchRequest) -> SwitchFacts:
    if sr.last_case_at is None and sr.state == SwitchState.pending:
        sr.last_case_at = await last_case_at(session, sr)
    account = await session.get(Account, sr.account_id)
    windows = switching_settings(hub).windows()
    if sr.notified_at is not None and sr.deadline_at is not None:
        # the window the current company was told of holds, whatever the config says later
        windows = replace(windows, response=sr.deadline_at - sr.notified_at)
    return SwitchFacts(
        now=hub.clock.now(),
        requested_at=sr.requested_at,
        last_case_at=sr.last_case_at,
        windows=windows,
        notified_at=sr.notified_at,
        response=CompanyResponse(sr.response),
        responded_at=sr.responded_at,
        operator_decision=OperatorDecision(sr.operator_decision),
        current_modalities=tuple(account.modalities or ()) if account else (),
    )


def policy_decision(hub: Hub, sr: SwitchRequest, facts: SwitchFacts) -> Decision:
    decision = hub.pm.hook.vethub_switch_decision(request=sr, facts=facts)
    if decision is None:  # the built-in rules are disabled and no other plugin answered
        return Decision(Outcome.WAIT, "no switch policy is enabled: nothing is decided automatically")
    return decision


async def evaluate(session: AsyncSession, hub: Hub, switch_id: int, *, actor: str) -> Decision:
    """Lock the request, ask the policy, and carry out its decision (once)."""
    sr = await session.get(SwitchRequest, switch_id, with_for_update=True, populate_existing=True)
    if sr is None:
        raise SwitchError(404, "not_found", "switch request not found")
    if sr.state not in OPEN_STATES:
        return Decision(Outcome(sr.outcome) if sr.outcome else Outcome.WAIT, "already decided")
    facts = await gather_facts(session, hub, sr)
    decision = policy_decision(hub, sr, facts)
    o = decision.outcome
    if o is Outcome.WAIT:
        return decision
    if o is Outcome.NOTIFY_CURRENT:
        if await _cas(session, sr, (SwitchState.pending,), SwitchState.awaiting_response, outcome=o.value,
                      reason=decision.reason, notified_at=facts.now, deadline_at=decision.deadline):
            await _notify_current(session, hub, sr, actor, decision)
        return decision
    if o is Outcome.ESCALATE_TO_OPERATOR:
        if await _cas(session, sr, (SwitchState.awaiting_response,), SwitchState.escalated, outcome=o.value,
                      reason=decision.reason):
            await _step(session, hub, sr, "escalated", actor, o.value, {"reason": decision.reason})
            await events.record(session, "switch_request.objection",
                                f"switch request {sr.id}: the current company objected; an operator decides",
                                practice_id=sr.practice_id, data={"switch_request_id": sr.id})
        return decision
    if o is Outcome.OPERATOR_REJECTED:
        if await _cas(session, sr, (SwitchState.escalated,), SwitchState.rejected, outcome=o.value, reason=decision.reason,
                      completed_at=facts.now):
            await _step(session, hub, sr, "rejected", actor, o.value, {"reason": decision.reason})
            await _tell_everyone(session, hub, sr, "switch_refused", decision)
        return decision
    if decision.goes_ahead:
        if await _cas(session, sr, OPEN_STATES, SwitchState.completed, outcome=o.value, reason=decision.reason,
                      completed_at=facts.now):
            await _carry_out(session, hub, sr, actor, decision)
        return decision
    raise SwitchError(500, "unknown_outcome", f"the switch policy returned {o!r}")


async def _cas(session: AsyncSession, sr: SwitchRequest, from_states: tuple[str, ...], to: str,
               **values: Any) -> bool:
    """Move the request to ``to`` only if it is still in one of ``from_states``."""
    result = await session.execute(
        update(SwitchRequest)
        .where(SwitchRequest.id == sr.id, SwitchRequest.state.in_(from_states))
        .values(state=to, **values)
        .execution_options(synchronize_session=False)
    )
    if cast(CursorResult[Any], result).rowcount != 1:
        log.info("switch request %s: someone else moved it on; nothing to do", sr.id)
        return False
    await session.refresh(sr)
    return True


# --- effects -----------------------------------------------------------------------------------------


async def _notify_current(session: AsyncSession, hub: Hub, sr: SwitchRequest, actor: str,
                          decision: Decision) -> None:
    practice, current, new = await _parties(session, sr)
    deadline = sr.deadline_at  # the _cas that moved the request here stored decision.deadline
    if deadline is None:
        # a house rule broke the hook's contract; the transaction rolls back, nothing is sent
        raise SwitchError(500, "no_deadline", "the switch policy asked the current company without a deadline")
    key = hub.config.hub.secret_key.get_secret_value()
    base = hub.config.hub.public_url.rstrip("/")
    links = {}
    for action in ("approve", "object"):
        expires, sig = sign_response(key, sr.id, action, deadline)
        links[action] = f"{base}/switch-requests/{sr.id}/respond?action={action}&expires={expires}&sig={sig}"
    await hub.jobs.enqueue(session, DEADLINE_JOB, {"switch_request_id": sr.id}, run_at=deadline,
                           idempotency_key=f"switch-deadline:{sr.id}")
    await _step(session, hub, sr, "notified", actor, decision.outcome.value,
                {"reason": decision.reason, "deadline": deadline.isoformat(),
                 "to": current.email})
    if current.email:
        await queue_email(
            session, hub, to=current.email, template="switch_notify_current",
            context={**_context(sr, practice, current, new), "approve_url": links["approve"],
                     "object_url": links["object"], "deadline": _fmt(deadline)},
            category="account", practice_id=sr.practice_id, company_id=current.id,
        )
    else:
        await events.record(session, "switch_request.no_company_email",
                            f"switch request {sr.id}: {current.name} has no email to notify",
                            practice_id=sr.practice_id, data={"switch_request_id": sr.id})


async def _carry_out(session: AsyncSession, hub: Hub, sr: SwitchRequest, actor: str,
                     decision: Decision) -> None:
    now = hub.clock.now()
    old = await session.get(Account, sr.account_id, with_for_update=True, populate_existing=True)
    assert old is not None  # the request's account (a foreign key), read under this transaction
    target = (
        await session.execute(
            select(Account).where(Account.practice_id == sr.practice_id,
                                  Account.company_id == sr.new_company_id)
        )
    ).scalar_one_or_none()
    old_before = history.account_state(old)
    target_before = history.account_state(target) if target else None
    if decision.effect == "add":
        moved = sorted(set(sr.modalities))
        old.modalities = [m for m in old.modalities or [] if m not in moved]
        change_old, change_new = "modalities_removed", "company_added"
    else:
        moved = sorted(set(old.modalities or []))
        old.modalities, old.status, old.approved_for_access = [], AccountStatus.SWITCHED, False
        change_old, change_new = "switched_out", "switched_in"
    if target is None:
        target = Account(practice_id=sr.practice_id, company_id=sr.new_company_id, approved_for_access=True,
                         modalities=moved, auto_submit=old.auto_submit, status=AccountStatus.ACTIVE,
                         created_at=now, updated_at=now)
        session.add(target)
    else:
        # switching back to a company the practice had before: the account it lands on is usable
        # again (a switched-out account is left unapproved), its history kept on the same row
        target.modalities = sorted(set(target.modalities or []) | set(moved))
        target.status, target.approved_for_access = AccountStatus.ACTIVE, True
    old.updated_at = target.updated_at = now
    await session.flush()
    if decision.effect != "add":
        await session.execute(
            update(CallingAE).where(CallingAE.account_id == old.id).values(account_id=target.id)
            .execution_options(synchronize_session=False)
        )
    sr.new_account_id = target.id
    await session.flush()
    old_after, target_after = history.account_state(old), history.account_state(target)
    rows = [
        await history.record(session, old, change_old, actor, before=old_before, after=old_after,
                             switch_request_id=sr.id, at=now),
        await history.record(session, target, change_new, actor, before=target_before, after=target_after,
                             switch_request_id=sr.id, at=now),
    ]
    await _step(session, hub, sr, "added" if decision.effect == "add" else "switched", actor,
                decision.outcome.value,
                {"reason": decision.reason, "from_account_id": old.id, "to_account_id": target.id,
                 "modalities": moved})
    for acc, before, after in ((old, old_before, old_after), (target, target_before, target_after)):
        await audit.record(session, actor, "account.switch", "account", acc.id, before=before, after=after,
                           company_id=acc.company_id, practice_id=acc.practice_id)
    await _tell_everyone(session, hub, sr, "switch_completed", decision)
    for row in rows:
        await history.announce(session, hub, row)


async def _tell_everyone(session: AsyncSession, hub: Hub, sr: SwitchRequest, template: str,
                         decision: Decision) -> None:
    """One email to the practice with both companies in Cc."""
    practice, current, new = await _parties(session, sr)
    to = sr.requester_email or practice.email
    cc = tuple(c.email for c in (current, new) if c.email)
    if not to:
        return
    await queue_email(
        session, hub, to=to, template=template,
        context={**_context(sr, practice, current, new), "outcome": decision.outcome.value,
                 "reason": decision.reason},
        category="account", cc=cc, practice_id=sr.practice_id, company_id=sr.new_company_id,
    )


# --- responses and operator decisions --------------------------------------------------------------


async def record_response(session: AsyncSession, hub: Hub, switch_id: int, action: str, *,
                          note: str = "") -> Decision:
    """The current company answers through its signed link (checked by the caller)."""
    if action not in ("approve", "object"):
        raise SwitchError(422, "invalid_field", "action is approve or object", "action")
    sr = await session.get(SwitchRequest, switch_id, with_for_update=True, populate_existing=True)
    if sr is None:
        raise SwitchError(404, "not_found", "switch request not found")
    now = hub.clock.now()
    if sr.state != SwitchState.awaiting_response or sr.response != "none":
        raise SwitchError(409, "already_answered", "this request is no longer waiting for an answer")
    if sr.deadline_at is not None and now >= sr.deadline_at:
        raise SwitchError(410, "link_expired", "the response window is closed")
    actor = f"company:{sr.current_company_id}:link"
    result = await session.execute(
        update(SwitchRequest)
        .where(SwitchRequest.id == sr.id, SwitchRequest.state == SwitchState.awaiting_response,
               SwitchRequest.response == "none")
        .values(response=action, responded_at=now, response_note=note or None)
        .execution_options(synchronize_session=False)
    )
    if cast(CursorResult[Any], result).rowcount != 1:
        raise SwitchError(409, "already_answered", "this request is no longer waiting for an answer")
    await session.refresh(sr)
    await _step(session, hub, sr, "responded", actor, action, {"note": note} if note else None)
    return await evaluate(session, hub, sr.id, actor=actor)


async def operator_decide(session: AsyncSession, hub: Hub, switch_id: int, decision: str, *,
                          actor: str, note: str = "") -> Decision:
    if decision not in ("approve", "reject"):
        raise SwitchError(422, "invalid_field", "decision is approve or reject", "decision")
    sr = await session.get(SwitchRequest, switch_id, with_for_update=True, populate_existing=True)
    if sr is None:
        raise SwitchError(404, "not_found", "switch request not found")
    if sr.state != SwitchState.escalated:
        raise SwitchError(409, "not_escalated", "only an escalated request waits for an operator")
    now = hub.clock.now()
    result = await session.execute(
        update(SwitchRequest)
        .where(SwitchRequest.id == sr.id, SwitchRequest.state == SwitchState.escalated,
               SwitchRequest.operator_decision == "none")
        .values(operator_decision=decision, decided_by=actor, decided_at=now)
        .execution_options(synchronize_session=False)
    )
    if cast(CursorResult[Any], result).rowcount != 1:
        raise SwitchError(409, "already_decided", "an operator already decided")
    await session.refresh(sr)
    await _step(session, hub, sr, "operator_decided", actor, decision, {"note": note} if note else None)
    return await evaluate(session, hub, sr.id, actor=actor)


async def deadline_job(hub: Hub, job: Any) -> None:
    """The response deadline passed (durable job, at least once: evaluate is idempotent)."""
    from hub.jobs import RetryAfter

    switch_id = int(job.payload["switch_request_id"])
    async with hub.transaction() as session:
        decision = await evaluate(session, hub, switch_id, actor="deadline")
    if decision.outcome is Outcome.WAIT and decision.deadline is not None:
        wait = (decision.deadline - hub.clock.now()).total_seconds()
        raise RetryAfter(max(wait, 1.0), "the deadline has not passed yet")


# --- views ---------------------------------------------------------------------------------------------


async def _step(session: AsyncSession, hub: Hub, sr: SwitchRequest, step: str, actor: str,
                outcome: str | None = None, detail: dict[str, Any] | None = None) -> None:
    """One step on the request (``GET /api/switch-requests/{id}``) and the same in the audit log."""
    session.add(SwitchStep(switch_request_id=sr.id, at=hub.clock.now(), step=step, actor=actor,
                           outcome=outcome, detail=detail))
    await audit.record(session, actor, f"switch_request.{step}", "switch_request", sr.id,
                       after={"outcome": outcome, "state": sr.state, **(detail or {})},
                       company_id=sr.current_company_id, practice_id=sr.practice_id)


async def _parties(session: AsyncSession, sr: SwitchRequest) -> tuple[Practice, Company, Company]:
    """The practice, current and new company of a request (foreign keys: the rows exist)."""
    practice = await session.get(Practice, sr.practice_id)
    current = await session.get(Company, sr.current_company_id)
    new = await session.get(Company, sr.new_company_id)
    assert practice is not None and current is not None and new is not None
    return practice, current, new


def _fmt(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else ""


def _context(sr: SwitchRequest, practice: Practice, current: Company, new: Company) -> dict[str, Any]:
    return {
        "switch_request_id": sr.id, "kind": sr.kind, "modalities": list(sr.modalities or []),
        "practice_name": practice.name, "current_company": current.name, "new_company": new.name,
        "requester_name": sr.requester_name, "statement": sr.statement,
    }


def switch_json(sr: SwitchRequest, steps: list[SwitchStep] | None = None) -> dict[str, Any]:
    def iso(v: datetime | None) -> str | None:
        return v.isoformat() if v else None

    out = {
        "id": sr.id, "kind": sr.kind, "practice_id": sr.practice_id, "account_id": sr.account_id,
        "current_company_id": sr.current_company_id, "new_company_id": sr.new_company_id,
        "modalities": list(sr.modalities or []), "requester_name": sr.requester_name,
        "requester_email": sr.requester_email, "requester_authorised": sr.requester_authorised,
        "statement": sr.statement, "statement_ref": sr.statement_ref, "source": sr.source, "entered_by": sr.entered_by, "state": sr.state,
        "outcome": sr.outcome, "reason": sr.reason, "requested_at": iso(sr.requested_at),
        "last_case_at": iso(sr.last_case_at), "notified_at": iso(sr.notified_at),
        "deadline_at": iso(sr.deadline_at), "response": sr.response, "responded_at": iso(sr.responded_at),
        "operator_decision": sr.operator_decision, "decided_by": sr.decided_by,
        "completed_at": iso(sr.completed_at), "new_account_id": sr.new_account_id,
    }
    if steps is not None:
        out["steps"] = [
            {"at": iso(s.at), "step": s.step, "actor": s.actor, "outcome": s.outcome, "detail": s.detail}
            for s in steps
        ]
    return out


async def load_steps(session: AsyncSession, switch_id: int) -> list[SwitchStep]:
    rows = await session.execute(
        select(SwitchStep).where(SwitchStep.switch_request_id == switch_id).order_by(SwitchStep.id)
    )
    return list(rows.scalars())
