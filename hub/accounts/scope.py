"""Who sees which account request and switch request: one rule for the API and the console.

- An account request: an operator sees all; a company admin its company's; practice staff only
  the requests waiting for their own practice's confirmation.
- A switch request: an operator; the practice's staff; an admin of either company. A draft
  (or a discarded draft) is not yet anyone's request: only operators see it.

Another tenant's request answers exactly like a missing one (:class:`hub.errors.NotFound`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, false
from sqlalchemy.ext.asyncio import AsyncSession

from hub.accounts.models import DRAFT_STATES, AccountRequest, RequestState, SwitchRequest
from hub.auth import Principal
from hub.errors import NotFound


def sees_request(principal: Principal, req: AccountRequest) -> bool:
    if principal.role == "company_admin":
        return req.company_id == principal.company_id
    if principal.role == "practice_staff":
        return req.state == RequestState.awaiting_practice and req.practice_id == principal.practice_id
    return principal.is_operator


def requests_visible(principal: Principal, stmt: Select[Any]) -> Select[Any]:
    """``stmt`` (a select of account requests) narrowed to what ``principal`` sees."""
    if principal.role == "company_admin":
        return stmt.where(AccountRequest.company_id == principal.company_id)
    if principal.role == "practice_staff":
        return stmt.where(AccountRequest.practice_id == principal.practice_id,
                          AccountRequest.state == RequestState.awaiting_practice)
    return stmt


async def scoped_request(session: AsyncSession, principal: Principal, request_id: int) -> AccountRequest:
    req = await session.get(AccountRequest, request_id)
    if req is None or not sees_request(principal, req):
        raise NotFound.of("account request")
    return req


def sees_switch(principal: Principal, sr: SwitchRequest) -> bool:
    if principal.is_operator:
        return True
    if sr.state in DRAFT_STATES:
        return False
    return ((principal.role == "practice_staff" and sr.practice_id == principal.practice_id)
            or (principal.role == "company_admin"
                and principal.company_id in (sr.current_company_id, sr.new_company_id)))


def switches_visible(principal: Principal, stmt: Select[Any]) -> Select[Any]:
    """``stmt`` (a select of switch requests) narrowed to what ``principal`` sees."""
    if principal.is_operator:
        return stmt
    stmt = stmt.where(SwitchRequest.state.not_in(DRAFT_STATES))
    if principal.role == "practice_staff":
        return stmt.where(SwitchRequest.practice_id == principal.practice_id)
    if principal.role == "company_admin":
        return stmt.where((SwitchRequest.current_company_id == principal.company_id)
                          | (SwitchRequest.new_company_id == principal.company_id))
    return stmt.where(false())


async def scoped_switch(session: AsyncSession, principal: Principal, switch_id: int) -> SwitchRequest:
    sr = await session.get(SwitchRequest, switch_id)
    if sr is None or not sees_switch(principal, sr):
        raise NotFound.of("switch request")
    return sr
