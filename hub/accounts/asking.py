"""A company asks a practice for more information about its account request: named fields and
a free-text question. The request goes back to "information requested" with a fresh completion
link; the practice's answers land in the request's ``extra`` and the request then goes on as
any completed request does (:func:`hub.accounts.onboarding.complete_request`)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from hub import audit
from hub.accounts.links import new_secret
from hub.accounts.models import AccountRequest, RequestState
from hub.accounts.onboarding import OnboardingError, _email, _public_url, request_json
from hub.accounts.policy import label
from hub.db.models import Company

if TYPE_CHECKING:
    from hub.core import Hub

#: The free-text question's answer is asked for under this name.
ANSWER = "answer"
_FIELD = re.compile(r"^[a-z][a-z0-9_]{0,49}$")


async def ask_for_information(
    session: AsyncSession, hub: Hub, req: AccountRequest, *, actor: str, fields: list[str], question: str = "",
) -> AccountRequest:
    """Email the practice a link to answer ``question`` and fill ``fields`` (snake_case names)."""
    if req.state not in ("awaiting_approval", "information_requested"):
        raise OnboardingError(409, "not_open", f"this request is {req.state.replace('_', ' ')}")
    question = question.strip()[:2000]
    names = [f.strip().lower().replace(" ", "_") for f in fields if f.strip()]
    for name in names:
        if not _FIELD.match(name):
            raise OnboardingError(422, "invalid_field", f"{name!r}: use letters, digits and _ (e.g. vat_number)",
                                  "fields")
    if question:
        names.append(ANSWER)
    if not names:
        raise OnboardingError(422, "nothing_asked", "write a question or name a field to ask for", "question")
    if not req.email:
        raise OnboardingError(409, "no_email", "the request has no email address to write to", "email")
    before = request_json(req)
    token, token_hash = new_secret()
    now = hub.clock.now()
    names = list(dict.fromkeys(names))
    req.missing_fields = names
    req.state = RequestState.information_requested
    req.information_requested_at = req.information_requested_at or now
    req.completion_token_hash = token_hash
    req.extra = {**(req.extra or {}), "company_question": question} if question else dict(req.extra or {})
    req.updated_at = now
    company = await session.get(Company, req.company_id) if req.company_id else None
    await _email(session, hub, req, company, "account_information_requested",
                 missing=[{"name": n, "label": question if n == ANSWER else label(n)} for n in names],
                 question=question,
                 complete_url=f"{_public_url(hub)}/account-requests/{req.id}/complete?token={token}")
    await audit.record(session, actor, "account_request.ask", "account_request", req.id, before=before,
                       after=request_json(req), company_id=req.company_id)
    await session.flush()
    return req
