"""The built-in reminder schedule (``vethub_reminder_schedule``).

Contact the client 28 and 7 days before a reminder is due, and 14 days after if the PIMS
still lists it as due, over email, then SMS, then postcard (the first channel the contact
verdict allows). A step may go up to three days late (the hub was down), never later.
A vendor's plugin returning its own :class:`~hub.clients.schedule.ReminderSchedule` wins.
"""

from __future__ import annotations

from hub.clients.schedule import (
    PracticeReminderFacts,
    ReminderFacts,
    ReminderSchedule,
    ReminderStepPlan,
)
from hub.hookspecs import hookimpl

DEFAULT = ReminderSchedule(
    steps=(ReminderStepPlan("before_28", -28), ReminderStepPlan("before_7", -7),
           ReminderStepPlan("after_14", 14)),
    channels=("email", "sms", "postcard"),
)


@hookimpl(trylast=True)
def vethub_reminder_schedule(reminder: ReminderFacts,
                             practice: PracticeReminderFacts) -> ReminderSchedule:
    return DEFAULT
