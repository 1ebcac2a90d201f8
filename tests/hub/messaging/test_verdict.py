"""The contact verdict over a table of clients: each refusal with its reason."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hub.messaging import service
from hub.messaging.outbound import plan_for_clients, queue_communication
from hub.messaging.verdict import Reason, Verdict, combine

# (key, client kwargs, category, channels, expected decision, expected reason code, channel)
TABLE = [
    ("ok", {}, "reminder", ["email"], "allow", "eligible", "email"),
    ("inactive", {"status": "inactive"}, "reminder", ["email"], "veto", "client_inactive", None),
    ("nopet", {"pets": ["deceased", "inactive"]}, "reminder", ["email"], "veto", "no_active_patient", None),
    # loyalty is not about a patient: no active pet is fine there
    ("nopet2", {"pets": []}, "loyalty", ["email"], "allow", "eligible", "email"),
    ("disabled", {"comms_disabled": True}, "reminder", ["email"], "veto", "pims_comms_disabled", None),
    ("optout", {}, "survey", ["email"], "veto", "preference_opt_out", None),
    # ... opted out of surveys only: reminders still go
    ("optout", {}, "reminder", ["email"], "allow", "eligible", "email"),
    ("bounced", {}, "reminder", ["email"], "veto", "address_invalid", None),
    ("noemail", {"email": None}, "reminder", ["email"], "veto", "no_email", None),
    ("nomobile", {"mobile": None}, "reminder", ["sms"], "veto", "no_mobile", None),
    ("mobile", {"mobile": "(202) 555-0143"}, "reminder", ["sms"], "allow", "eligible", "sms"),
    ("landline", {"mobile": "+44 20 7946 0000"}, "reminder", ["sms"], "veto", "no_mobile", None),
    ("stopped", {"mobile": "+12025550199"}, "reminder", ["sms"], "veto", "address_opted_out", None),
    ("noaddr", {"address": False}, "reminder", ["postcard"], "veto", "no_postal_address", None),
    # fallback order: no email -> sms
    ("noemail", {"email": None}, "reminder", ["email", "sms"], "allow", "eligible", "sms"),
]


@pytest.fixture
async def table_world(world, client_maker):
    hub = world.hub
    ids = {}
    for key, kwargs, *_ in TABLE:
        if key not in ids:
            ids[key] = await client_maker(hub, world.practice_id, key, **kwargs)
    async with hub.transaction() as s:
        await service.record_consent(s, hub, client_id=ids["optout"], category="survey", channel="*",
                                     allowed=False, source="preference_page")
        await service.mark_address_invalid(s, hub, kind="email", address="Bounced@Example.org",
                                           reason="550 5.1.1", source="bounce")
        await service.set_address_opt_out(s, hub, kind="sms", address="+1 202 555 0199", opted_out=True,
                                          source="sms_keyword", detail="STOP")
    return world, ids


@pytest.mark.parametrize(("key", "kwargs", "category", "channels", "decision", "code", "channel"), TABLE,
                         ids=[f"{t[0]}-{t[2]}-{'+'.join(t[3])}" for t in TABLE])
async def test_verdict_table(table_world, key, kwargs, category, channels, decision, code, channel) -> None:
    world, ids = table_world
    hub = world.hub
    async with hub.sessionmaker() as s:
        plan = (await plan_for_clients(s, hub, [ids[key]], category=category, channels=channels))[ids[key]]
    assert plan.verdict.decision == decision, plan.reasons
    assert code in [r["code"] for r in plan.reasons], plan.reasons
    assert all(r["message"] for r in plan.reasons)
    if decision == "veto":
        vetoed = [r for r in plan.reasons if r["decision"] == "veto"]
        assert vetoed[0]["code"] == code and vetoed[0]["plugin"] == "contact_policy"
    else:
        assert plan.channel == channel


async def test_quiet_hours_defer_not_drop(world_factory, client_maker, reminder_context) -> None:
    from hub.clock import FrozenClock

    # 03:30 UTC = 22:30 in New York, inside 20:00-08:00
    clock = FrozenClock(datetime(2026, 3, 3, 3, 30, tzinfo=UTC))
    world = await world_factory(clock=clock)
    hub = world.hub
    cid = await client_maker(hub, world.practice_id, "night")
    async with hub.transaction() as s:
        comm = await queue_communication(s, hub, client_id=cid, template="reminder", category="reminder",
                                         channels=("sms", "email"), context=reminder_context)
    assert comm.status == "deferred" and comm.channel == "sms"
    assert comm.verdict_reasons[0]["code"] == "quiet_hours"
    # 08:00 New York = 13:00 UTC (EST)
    assert comm.not_before == datetime(2026, 3, 3, 13, 0, tzinfo=UTC)
    # email is not a quiet-hours channel by default: the same request by email goes now
    async with hub.transaction() as s:
        now_comm = await queue_communication(s, hub, client_id=cid, template="reminder", category="reminder",
                                             channels=("email",), context=reminder_context)
    assert now_comm.status == "queued"


def test_any_veto_wins_and_defer_beats_allow() -> None:
    until = datetime(2026, 1, 1, tzinfo=UTC)
    allow, veto = Verdict.allow(Reason("ok", "fine")), Verdict.veto("house_rule", "no texts on Sundays")
    defer = Verdict.defer("quiet_hours", "night", until)
    v = combine([("a", allow), ("b", veto), ("c", defer), ("d", None)])
    assert v.decision == "veto" and [(r.code, r.plugin) for r in v.reasons] == [("house_rule", "b")]
    v = combine([("a", allow), ("c", defer)])
    assert v.decision == "defer" and v.defer_until == until
    assert combine([]).decision == "allow"
    with pytest.raises(TypeError, match="plugin 'x'"):
        combine([("x", True)])


async def test_a_vendor_policy_veto_counts(world_factory, client_maker) -> None:
    from hub.hookspecs import hookimpl

    class NoMarketing:
        @hookimpl
        def vethub_contact_verdict(self, context):
            if context.category == "marketing":
                return Verdict.veto("house_rule", "this practice sends no marketing")
            return None

    world = await world_factory()
    hub = world.hub
    hub.pm.register(NoMarketing(), name="house")
    cid = await client_maker(hub, world.practice_id, "vendor")
    async with hub.sessionmaker() as s:
        plans = await plan_for_clients(s, hub, [cid], category="marketing", channels=["email"])
        ok = await plan_for_clients(s, hub, [cid], category="loyalty", channels=["email"])
    assert plans[cid].verdict.decision == "veto"
    assert plans[cid].reasons == [{"code": "house_rule", "message": "this practice sends no marketing",
                                   "plugin": "house", "decision": "veto", "channel": "email"}]
    assert ok[cid].verdict.decision == "allow"


async def test_deferred_message_goes_out_when_quiet_hours_end(world_factory, client_maker, reminder_context) -> None:
    from hub.clock import FrozenClock
    from hub.messaging.models import Communication

    clock = FrozenClock(datetime(2026, 3, 3, 3, 30, tzinfo=UTC))  # 22:30 in New York
    world = await world_factory({"messaging": {"quiet_hours_channels": ["email", "sms"]}}, clock=clock)
    hub = world.hub
    cid = await client_maker(hub, world.practice_id, "owl")
    async with hub.transaction() as s:
        comm = await queue_communication(s, hub, client_id=cid, template="reminder", category="reminder",
                                         channels=("email",), context=reminder_context)
        comm_id = comm.id
    assert comm.status == "deferred"
    assert await hub.jobs.run_until_idle() == 0  # not due yet
    clock.set(datetime(2026, 3, 3, 12, 59, tzinfo=UTC))
    assert await hub.jobs.run_until_idle() == 0
    clock.set(datetime(2026, 3, 3, 13, 0, tzinfo=UTC))  # 08:00 in New York
    assert await hub.jobs.run_until_idle() == 1
    assert [m.rcpt_tos for m in world.sink.messages] == [["owl@example.org"]]
    async with hub.sessionmaker() as s:
        assert (await s.get(Communication, comm_id)).status == "sent"
