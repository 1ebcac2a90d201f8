"""The types of the ``vethub_reminder_schedule`` hook: what a policy is given and returns.

A policy is a pure decision: given a reminder and its practice, the steps (each a day relative
to the due date) and the channel order. The core (:mod:`hub.clients.reminders`) decides which
steps are due on which day, writes each step exactly once and asks the contact verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, time, timedelta


@dataclass(frozen=True)
class ReminderStepPlan:
    """One contact about a reminder.

    :param name: stable within the schedule ("before_28"): with the reminder it is the step's
        idempotency key, so renaming a step sends it again.
    :param offset_days: days from the due date (negative: before).
    :param window_days: how many days late the step may still go (a hub that was down);
        after that it is not sent at all.
    """

    name: str
    offset_days: int
    window_days: int = 3

    def day(self, due: date) -> date:
        return due + timedelta(days=self.offset_days)


@dataclass(frozen=True)
class ReminderSchedule:
    """A schedule policy's answer: the steps a reminder goes through and the channels to try."""
    steps: tuple[ReminderStepPlan, ...]
    #: the channel order: the first the contact verdict allows is used
    channels: tuple[str, ...] = ("email", "sms", "postcard")


@dataclass(frozen=True)
class ReminderFacts:
    """What a schedule policy may look at. A reminder reaches the policy only while the PIMS
    still lists it as active (due): one done or cancelled gets no further step."""

    id: int
    practice_id: int
    service: str | None
    due_date: date
    patient_status: str
    species: str | None


@dataclass(frozen=True)
class PracticeReminderFacts:
    """What a schedule policy may know about the practice: its time zone and sending hours."""
    id: int
    slug: str
    timezone: str
    sending_hours: tuple[time, time]
