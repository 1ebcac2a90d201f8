"""Table-driven tests of the built-in switch rules, boundaries to the second."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pluggy
import pytest

from plugins.policies import switching
from plugins.policies.switching import (
    CompanyResponse,
    Decision,
    OperatorDecision,
    Outcome,
    SwitchFacts,
    SwitchWindows,
)

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)  # the request date
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)


@dataclass
class Req:
    kind: str = "move"
    modalities: list[str] | None = None


def facts(**kw) -> SwitchFacts:
    kw.setdefault("now", T0)
    kw.setdefault("requested_at", T0)
    kw.setdefault("last_case_at", T0 - 30 * DAY)
    return SwitchFacts(**kw)


NOTIFIED = {"notified_at": T0}

CASES = [
    # id, request, facts, expected outcome
    ("never-submitted", Req(), facts(last_case_at=None), Outcome.SWITCH_NOW),
    ("last-case-364-days", Req(), facts(last_case_at=T0 - 364 * DAY), Outcome.NOTIFY_CURRENT),
    # inclusive: exactly 365 days before still counts as activity
    ("last-case-365-days", Req(), facts(last_case_at=T0 - 365 * DAY), Outcome.NOTIFY_CURRENT),
    (
        "last-case-365-days-and-1s",
        Req(),
        facts(last_case_at=T0 - 365 * DAY - timedelta(seconds=1)),
        Outcome.SWITCH_NOW,
    ),
    ("last-case-366-days", Req(), facts(last_case_at=T0 - 366 * DAY), Outcome.SWITCH_NOW),
    (
        "window-from-config",
        Req(),
        facts(
            last_case_at=T0 - 31 * DAY,
            windows=SwitchWindows(activity=30 * DAY),
        ),
        Outcome.SWITCH_NOW,
    ),
    # response window: notified at T0, deadline T0+72h, half-open
    ("no-answer-0h", Req(), facts(**NOTIFIED), Outcome.WAIT),
    ("no-answer-71:59", Req(), facts(now=T0 + 72 * HOUR - MINUTE, **NOTIFIED), Outcome.WAIT),
    (
        "no-answer-72:00",
        Req(),
        facts(now=T0 + 72 * HOUR, **NOTIFIED),
        Outcome.SWITCH_WITHOUT_PERMISSION,
    ),
    (
        "no-answer-72:01",
        Req(),
        facts(now=T0 + 72 * HOUR + MINUTE, **NOTIFIED),
        Outcome.SWITCH_WITHOUT_PERMISSION,
    ),
    (
        "approve-at-71:59",
        Req(),
        facts(
            now=T0 + 72 * HOUR - MINUTE,
            response=CompanyResponse.APPROVE,
            responded_at=T0 + 72 * HOUR - MINUTE,
            **NOTIFIED,
        ),
        Outcome.SWITCH_APPROVED,
    ),
    (
        "object-at-71:59",
        Req(),
        facts(
            now=T0 + 80 * HOUR,
            response=CompanyResponse.OBJECT,
            responded_at=T0 + 72 * HOUR - MINUTE,
            **NOTIFIED,
        ),
        Outcome.ESCALATE_TO_OPERATOR,
    ),
    (
        "object-at-72:00-is-too-late",
        Req(),
        facts(
            now=T0 + 72 * HOUR,
            response=CompanyResponse.OBJECT,
            responded_at=T0 + 72 * HOUR,
            **NOTIFIED,
        ),
        Outcome.SWITCH_WITHOUT_PERMISSION,
    ),
    (
        "operator-approves-objection",
        Req(),
        facts(
            response=CompanyResponse.OBJECT,
            responded_at=T0 + HOUR,
            operator_decision=OperatorDecision.APPROVE,
            **NOTIFIED,
        ),
        Outcome.OPERATOR_APPROVED,
    ),
    (
        "operator-rejects",
        Req(),
        facts(
            response=CompanyResponse.OBJECT,
            responded_at=T0 + HOUR,
            operator_decision=OperatorDecision.REJECT,
            **NOTIFIED,
        ),
        Outcome.OPERATOR_REJECTED,
    ),
    (
        "add-untaken-modality",
        Req(kind="add", modalities=["MR"]),
        facts(current_modalities=["DX", "CT"]),
        Outcome.ADD_COMPANY,
    ),
    (
        "add-taken-modality-active",
        Req(kind="add", modalities=["CT"]),
        facts(current_modalities=["DX", "CT"]),
        Outcome.NOTIFY_CURRENT,
    ),
    (
        "add-taken-modality-inactive",
        Req(kind="add", modalities=["CT"]),
        facts(current_modalities=["DX", "CT"], last_case_at=T0 - 400 * DAY),
        Outcome.SWITCH_NOW,
    ),
]


@pytest.mark.parametrize(
    ("request_", "facts_", "expected"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_rules(request_: Req, facts_: SwitchFacts, expected: Outcome) -> None:
    decision = switching.decide(request_, facts_)
    assert isinstance(decision, Decision)
    assert decision.outcome is expected
    assert decision.reason
    if decision.goes_ahead:
        assert decision.effect == request_.kind
    else:
        assert decision.effect is None


def test_notify_sets_deadline_from_now() -> None:
    d = switching.decide(Req(), facts(now=T0 + HOUR))
    assert d.outcome is Outcome.NOTIFY_CURRENT
    assert d.deadline == T0 + HOUR + 72 * HOUR


def test_wait_carries_deadline() -> None:
    d = switching.decide(Req(), facts(now=T0 + HOUR, notified_at=T0))
    assert d.deadline == T0 + 72 * HOUR


def test_through_a_plugin_manager_firstresult() -> None:
    """A house rule registered with tryfirst wins; otherwise the built-in rule answers."""
    from hub.hookspecs import hookimpl

    pm = _plugin_manager()
    pm.register(switching, name="switching")
    f = facts(last_case_at=None)
    assert pm.hook.vethub_switch_decision(request=Req(), facts=f).outcome is Outcome.SWITCH_NOW

    class Never:
        @hookimpl(tryfirst=True)
        def vethub_switch_decision(self, request, facts):
            return Decision(Outcome.ESCALATE_TO_OPERATOR, "house rule: always ask a person")

    pm.register(Never(), name="house")
    got = pm.hook.vethub_switch_decision(request=Req(), facts=f)
    assert got.outcome is Outcome.ESCALATE_TO_OPERATOR


def _plugin_manager() -> pluggy.PluginManager:
    from hub import hookspecs

    pm = pluggy.PluginManager("vethub")
    pm.add_hookspecs(hookspecs)
    return pm
