"""vethub_reminder_schedule: a vendor's schedule answers before the built-in one."""

from __future__ import annotations

from datetime import date, time
from typing import Any

from hub.clients.reminders import schedule_for
from hub.clients.schedule import (
    PracticeReminderFacts,
    ReminderFacts,
    ReminderSchedule,
    ReminderStepPlan,
)
from hub.hookspecs import hookimpl
from plugins.policies.reminders import DEFAULT

DOGS_ONLY_SMS = ReminderSchedule(steps=(ReminderStepPlan("day_before", -1),), channels=("sms",))


class DogsBySms:
    @hookimpl
    def vethub_reminder_schedule(self, reminder: ReminderFacts,
                                 practice: PracticeReminderFacts) -> ReminderSchedule | None:
        return DOGS_ONLY_SMS if reminder.species == "canine" else None


def _facts(species: str) -> tuple[ReminderFacts, PracticeReminderFacts]:
    return (ReminderFacts(1, 1, "Rabies", date(2027, 1, 10), "active", species),
            PracticeReminderFacts(1, "demo", "America/New_York", (time(9), time(18))))


async def test_vendor_schedule_wins_and_the_default_answers_the_rest(hub_factory: Any) -> None:
    hub = await hub_factory(plugins=[("dogs-by-sms", DogsBySms())])
    assert schedule_for(hub, *_facts("canine")) == DOGS_ONLY_SMS
    assert schedule_for(hub, *_facts("feline")) == DEFAULT
