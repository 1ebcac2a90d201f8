"""Built-in switch rules: when a practice's account may move from one company to another.

A pure policy over facts the accounts service gathers (``hub.accounts.switching``); it does no I/O
and reads the time only from ``facts.now``, so every boundary is testable with a frozen clock.

The rules (issue 6, windows from the ``[accounts.switching]`` config section):

1. No case submitted by the account within the activity window (default 365 days) before the
   request date -> ``switch_now``.
2. Otherwise the current company is notified (``notify_current``) and has the response window
   (default 72 hours) from the moment it was notified:
   approve -> ``switch_approved``; object -> ``escalate_to_operator``; no answer by the deadline ->
   ``switch_without_permission``; before the deadline with no answer -> ``wait``.
3. After an objection the operator decides: ``operator_approved`` or ``operator_rejected``.
4. An "add a company for these modalities" request that takes no modality from the current
   company -> ``add_company`` at once; one that does goes through rules 1-3 and, when it goes
   ahead, adds rather than moves (``Decision.effect == "add"``).

Boundaries (both chosen to favour the current company, which is what the rules protect):

* activity window **inclusive**: a last case exactly 365 days (to the second) before the request
  counts as activity, so the current company is notified; 365 days and one second before does not.
* response window **half-open** ``[notified_at, deadline)``: a response at 71:59:59 counts; at
  72:00:00 the window is closed, so with no answer the switch goes ahead without permission and a
  response stamped at or after the deadline is ignored (the signed links expire at the deadline too).
"""

from __future__ import annotations

from hub.accounts.policy import (
    GO_OUTCOMES,
    CompanyResponse,
    Decision,
    OperatorDecision,
    Outcome,
    SwitchFacts,
    SwitchKind,
    SwitchRequestLike,
    SwitchWindows,
)
from hub.hookspecs import hookimpl

__all__ = [
    "GO_OUTCOMES", "CompanyResponse", "Decision", "OperatorDecision", "Outcome", "SwitchFacts",
    "SwitchKind", "SwitchRequestLike", "SwitchWindows", "decide", "vethub_switch_decision",
]


def case_within_activity_window(facts: SwitchFacts) -> bool:
    """True when the account's last case is inside the (inclusive) activity window."""
    if facts.last_case_at is None:
        return False
    return facts.requested_at - facts.last_case_at <= facts.windows.activity


def response_in_time(facts: SwitchFacts) -> bool:
    """True when the current company answered strictly before the deadline."""
    deadline = facts.deadline
    if facts.response is CompanyResponse.NONE or deadline is None or facts.responded_at is None:
        return False
    return facts.responded_at < deadline


def decide(request: SwitchRequestLike, facts: SwitchFacts) -> Decision:
    kind = SwitchKind(request.kind)
    effect = kind.value

    def go(outcome: Outcome, reason: str) -> Decision:
        return Decision(outcome, reason, effect=effect, deadline=facts.deadline)

    if kind is SwitchKind.ADD:
        wanted = set(request.modalities or ())
        taken = sorted(wanted & set(facts.current_modalities))
        if not taken:
            return go(
                Outcome.ADD_COMPANY,
                "the new company only takes modalities the current company does not read",
            )

    if facts.operator_decision is OperatorDecision.APPROVE:
        return go(Outcome.OPERATOR_APPROVED, "an operator approved the switch after an objection")
    if facts.operator_decision is OperatorDecision.REJECT:
        return Decision(
            Outcome.OPERATOR_REJECTED,
            "an operator upheld the current company's objection",
            deadline=facts.deadline,
        )

    if not case_within_activity_window(facts):
        days = facts.windows.activity.days
        reason = (
            "the account has never submitted a case"
            if facts.last_case_at is None
            else f"no case submitted in the {days} days before the request"
        )
        return go(Outcome.SWITCH_NOW, reason)

    if facts.notified_at is None:
        return Decision(
            Outcome.NOTIFY_CURRENT,
            "a case was submitted within the activity window: the current company must be asked",
            deadline=facts.now + facts.windows.response,
        )

    if response_in_time(facts):
        if facts.response is CompanyResponse.APPROVE:
            return go(Outcome.SWITCH_APPROVED, "the current company approved the switch")
        return Decision(
            Outcome.ESCALATE_TO_OPERATOR,
            "the current company objected: an operator decides",
            deadline=facts.deadline,
        )

    assert facts.deadline is not None
    if facts.now >= facts.deadline:
        return go(
            Outcome.SWITCH_WITHOUT_PERMISSION,
            "the current company did not answer within the response window",
        )
    return Decision(
        Outcome.WAIT, "waiting for the current company's answer", deadline=facts.deadline
    )


@hookimpl
def vethub_switch_decision(request: SwitchRequestLike, facts: SwitchFacts) -> Decision:
    """Built-in switch rules (see module docstring). A house rule registered before this one
    (``tryfirst=True``) can return its own :class:`Decision` and end the call."""
    return decide(request, facts)
