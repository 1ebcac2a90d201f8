"""Verdict values as a vendor policy may build them, and facts no policy can change
(hub/messaging/verdict.py), against mutants that survived the suite."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from hub.messaging.verdict import ClientFacts, Reason, SuppressionFact, Verdict, combine


def _runtime(word: str) -> str:
    """The same text as a new string object, as read from a config file or a database."""
    return "".join(list(word))


@pytest.mark.parametrize(("decision", "allowed"), [("allow", True), ("defer", False), ("veto", False)])
def test_allowed_means_the_decision_is_allow(decision: str, allowed: bool) -> None:
    assert Verdict(decision, (Reason("x", "y"),)).allowed is allowed  # type: ignore[arg-type]
    assert Verdict(_runtime(decision), (Reason("x", "y"),)).allowed is allowed  # type: ignore[arg-type]


def test_decisions_are_compared_by_value() -> None:
    until = datetime(2026, 1, 1, tzinfo=UTC)
    defer = Verdict(_runtime("defer"), (Reason("quiet_hours", "night"),), until)  # type: ignore[arg-type]
    veto = Verdict(_runtime("veto"), (Reason("house_rule", "no"),))  # type: ignore[arg-type]
    allow = Verdict(_runtime("allow"), (Reason("ok", "fine"),))  # type: ignore[arg-type]
    assert combine([("a", allow), ("q", defer)]).decision == "defer"
    assert combine([("a", allow), ("q", defer), ("h", veto)]).decision == "veto"


def test_facts_cannot_be_changed_by_a_policy() -> None:
    """Every policy sees the same facts: none can alter them for the next."""
    client = ClientFacts(id=1, practice_id=2, name="Ann", active=True, comms_disabled=False,
                         active_patients=1, email="ann@example.org", phone_mobile=None,
                         postal_address=None)
    suppression = SuppressionFact("email", "opt_out", "one_click")
    with pytest.raises(dataclasses.FrozenInstanceError):
        client.comms_disabled = True  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        suppression.reason = "invalid"  # type: ignore[misc]
