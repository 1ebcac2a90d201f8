"""Switching companies through the API with an injectable clock: the activity boundary, the
response window at 71:59 / 72:00 / 72:01, approve, object + operator, a restart inside the
window, the add-a-company variant, and the emails (company in Cc)."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import func, select

from hub.accounts.models import AccountHistory, SwitchRequest
from hub.db.models import Account, AuditEntry, CallingAE, Job

from .accounts_world import READ_RIGHT, SCAN_CO, T0, World, add_case, add_practice

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)


async def setup(world: World, *, last_case_days_ago: float | None = 30, modalities=("DX", "CT")):
    rr = world.companies["read-right"]
    pid, accounts = await add_practice(world.hub, "elm-vets", {rr: list(modalities)})
    async with world.hub.transaction() as s:
        s.add(CallingAE(practice_id=pid, account_id=accounts[rr], ae_title="ELM1"))
    if last_case_days_ago is not None:
        await add_case(world.hub, pid, accounts[rr], rr, T0 - timedelta(days=last_case_days_ago))
    staff = await world.api.as_role("practice_staff", practice_id=pid)
    return pid, accounts[rr], staff


def request_body(**kw):
    body = {"current_company": "read-right", "new_company": "scan-co", "requester_name": "Dr Ada Brown",
            "requester_email": "ada@elm.example", "requester_authorised": True,
            "statement": "We wish to move our account to ScanCo. Ada Brown, practice owner."}
    body.update(kw)
    return body


async def submit(staff, **kw) -> dict:
    r = await staff.post("/api/switch-requests", json=request_body(**kw))
    assert r.status == 201, await r.text()
    return await r.json()


async def account_company(world: World, pid: int) -> list[tuple[int, str, bool]]:
    async with world.hub.sessionmaker() as s:
        rows = await s.execute(select(Account.company_id, Account.status, Account.approved_for_access)
                               .where(Account.practice_id == pid).order_by(Account.id))
        return [tuple(r) for r in rows]


@pytest.mark.parametrize(("days", "outcome", "state"), [
    (364, "notify_current", "awaiting_response"),
    (365, "notify_current", "awaiting_response"),  # inclusive boundary
    (366, "switch_now", "completed"),
], ids=["364-days", "365-days", "366-days"])
async def test_activity_window_boundary(world: World, days, outcome, state) -> None:
    pid, _, staff = await setup(world, last_case_days_ago=days)
    sr = await submit(staff)
    assert (sr["outcome"], sr["state"]) == (outcome, state)
    if state == "completed":
        assert [c for c, st, _ in await account_company(world, pid) if st == "active"] == [world.companies["scan-co"]]


async def test_no_case_ever_switches_at_once_and_tells_everyone(world: World) -> None:
    pid, old_id, staff = await setup(world, last_case_days_ago=None)
    sr = await submit(staff)
    assert sr["outcome"] == "switch_now" and sr["state"] == "completed"
    assert [s["step"] for s in sr["steps"]] == ["submitted", "switched"]
    await world.run_jobs()
    [mail] = world.mails("ada@elm.example")
    assert READ_RIGHT in str(mail["Cc"]) and SCAN_CO in str(mail["Cc"])
    async with world.hub.sessionmaker() as s:
        new = await s.get(Account, sr["new_account_id"])
        old = await s.get(Account, old_id)
        ae = (await s.execute(select(CallingAE).where(CallingAE.ae_title == "ELM1"))).scalar_one()
        hist = (await s.execute(select(AccountHistory.change).order_by(AccountHistory.id))).scalars().all()
        audits = (await s.execute(select(AuditEntry.action))).scalars().all()
    assert new.company_id == world.companies["scan-co"] and new.modalities == ["CT", "DX"]
    assert old.status == "switched" and not old.approved_for_access
    assert ae.account_id == new.id
    assert hist == ["switched_out", "switched_in"]
    assert [a for a in audits if a.startswith("switch_request.")] == [
        "switch_request.submitted", "switch_request.switched"]
    assert audits.count("account.switch") == 2


def links_from(world: World) -> dict[str, str]:
    [mail] = world.mails(READ_RIGHT)
    text = mail.get_body(preferencelist=("plain",)).get_content()
    links = {}
    for line in text.splitlines():
        if "/switch-requests/" in line and "action=" in line:
            url = line.split(":", 1)[1].strip()
            links[parse_qs(urlsplit(url).query)["action"][0]] = url
    return links


async def respond(world: World, url: str, note: str = ""):
    parts = urlsplit(url)
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    page = await world.api.get(f"{parts.path}?{parts.query}")  # GET only shows the button
    assert page.status == 200
    return await world.api.post(parts.path, data={**q, "note": note})


@pytest.mark.parametrize(("answer_at", "action", "final_state", "outcome"), [
    (72 * HOUR - MINUTE, "approve", "completed", "switch_approved"),
    (72 * HOUR - MINUTE, "object", "escalated", "escalate_to_operator"),
], ids=["approve-71:59", "object-71:59"])
async def test_response_inside_window(world: World, answer_at, action, final_state, outcome) -> None:
    pid, _, staff = await setup(world)
    sr = await submit(staff)
    await world.run_jobs()
    links = links_from(world)
    assert set(links) == {"approve", "object"}
    world.clock.advance(seconds=answer_at.total_seconds())
    r = await respond(world, links[action], note="see letter")
    assert r.status == 200, await r.text()
    got = await (await staff.get(f"/api/switch-requests/{sr['id']}")).json()
    assert (got["state"], got["outcome"], got["response"]) == (final_state, outcome, action)
    # the other link is now refused, and the deadline job changes nothing
    r = await respond(world, links["object" if action == "approve" else "approve"])
    assert r.status == 409
    world.clock.advance(hours=2)
    await world.run_jobs()
    again = await (await staff.get(f"/api/switch-requests/{sr['id']}")).json()
    assert again["state"] == final_state


@pytest.mark.parametrize(("wait", "state"), [
    (72 * HOUR - MINUTE, "awaiting_response"),
    (72 * HOUR, "completed"),
    (72 * HOUR + MINUTE, "completed"),
], ids=["none-71:59", "none-72:00", "none-72:01"])
async def test_no_answer_deadline(world: World, wait, state) -> None:
    pid, _, staff = await setup(world)
    sr = await submit(staff)
    world.clock.advance(seconds=wait.total_seconds())
    await world.run_jobs()
    got = await (await staff.get(f"/api/switch-requests/{sr['id']}")).json()
    assert got["state"] == state
    if state == "completed":
        assert got["outcome"] == "switch_without_permission"
        assert got["steps"][-1]["actor"] == "deadline"


async def test_links_are_signed_and_expire(world: World) -> None:
    pid, _, staff = await setup(world)
    await submit(staff)
    await world.run_jobs()
    parts = urlsplit(links_from(world)["approve"])
    url = f"{parts.path}?{parts.query}"
    forged = url.replace("action=approve", "action=object")
    assert (await world.api.get(forged)).status == 403
    world.clock.advance(hours=72)
    r = await world.api.get(url)
    assert r.status == 410


async def test_operator_decides_an_objection(world: World) -> None:
    pid, _, staff = await setup(world)
    sr = await submit(staff)
    await world.run_jobs()
    await respond(world, links_from(world)["object"], note="unpaid invoices")
    company = await world.as_company("read-right")
    assert (await company.post(f"/api/switch-requests/{sr['id']}/decision",
                               json={"decision": "approve"})).status == 403
    op = await world.as_operator()
    r = await op.get("/api/events?kind=switch_request.objection")
    assert r.status == 200 and len((await r.json())["items"]) == 1
    r = await op.post(f"/api/switch-requests/{sr['id']}/decision", json={"decision": "reject", "note": "valid"})
    got = await r.json()
    assert (got["state"], got["outcome"]) == ("rejected", "operator_rejected")
    steps = ["submitted", "notified", "responded", "escalated", "operator_decided", "rejected"]
    assert [s["step"] for s in got["steps"]] == steps
    async with world.hub.sessionmaker() as s:
        audited = (await s.execute(select(AuditEntry.action).where(AuditEntry.entity == "switch_request")
                                   .order_by(AuditEntry.id))).scalars().all()
    assert audited == [f"switch_request.{step}" for step in steps]
    await world.run_jobs()
    refused = world.mails("ada@elm.example")[-1]
    assert "not approved" in str(refused["Subject"]) and SCAN_CO in str(refused["Cc"])
    assert [c for c, st, _ in await account_company(world, pid) if st == "active"] == [world.companies["read-right"]]


async def test_operator_approves_an_objection(world: World) -> None:
    pid, _, staff = await setup(world)
    sr = await submit(staff)
    await world.run_jobs()
    await respond(world, links_from(world)["object"])
    op = await world.as_operator()
    got = await (await op.post(f"/api/switch-requests/{sr['id']}/decision", json={"decision": "approve"})).json()
    assert (got["state"], got["outcome"]) == ("completed", "operator_approved")


async def test_restart_inside_the_window(world_factory, hub_factory) -> None:
    world = await world_factory()
    pid, _, staff = await setup(world)
    sr = await submit(staff)
    world.clock.advance(hours=30)
    await world.hub.stop()  # the hub goes down inside the window
    hub2 = await hub_factory(config=world.hub.config, clock=world.clock)
    world.clock.advance(hours=41, minutes=59)  # 71:59 after notification: not yet
    await hub2.jobs.run_until_idle()
    async with hub2.sessionmaker() as s:
        assert (await s.get(SwitchRequest, sr["id"])).state == "awaiting_response"
    world.clock.advance(minutes=1)
    await hub2.jobs.run_until_idle()
    await hub2.jobs.run_until_idle()
    async with hub2.sessionmaker() as s:
        done = await s.get(SwitchRequest, sr["id"])
        jobs = (await s.execute(select(func.count()).select_from(Job).where(Job.kind == "accounts.switch_deadline"))).scalar()
        switched = (await s.execute(select(func.count()).select_from(AccountHistory)
                                    .where(AccountHistory.change == "switched_in"))).scalar()
    assert (done.state, done.outcome) == ("completed", "switch_without_permission")
    assert jobs == 1 and switched == 1


async def test_add_a_company_for_a_modality(world: World) -> None:
    pid, old_id, staff = await setup(world, modalities=("DX", "CT"))
    # MR is not read by the current company: added at once, nothing taken from it
    sr = await submit(staff, kind="add", modalities=["MR"])
    assert (sr["state"], sr["outcome"]) == ("completed", "add_company")
    async with world.hub.sessionmaker() as s:
        old = await s.get(Account, old_id)
        new = await s.get(Account, sr["new_account_id"])
    assert old.status == "active" and old.modalities == ["DX", "CT"]
    assert new.company_id == world.companies["scan-co"] and new.modalities == ["MR"]


async def test_add_a_taken_modality_asks_the_current_company(world: World) -> None:
    pid, old_id, staff = await setup(world, modalities=("DX", "CT"))
    sr = await submit(staff, kind="add", modalities=["CT"])
    assert sr["state"] == "awaiting_response"
    world.clock.advance(hours=72)
    await world.run_jobs()
    async with world.hub.sessionmaker() as s:
        old = await s.get(Account, old_id)
        done = await s.get(SwitchRequest, sr["id"])
        new = await s.get(Account, done.new_account_id)
    assert old.status == "active" and old.modalities == ["DX"] and old.approved_for_access
    assert new.modalities == ["CT"]


@pytest.mark.parametrize(("change", "field"), [
    ({"requester_authorised": False}, "requester_authorised"),
    ({"requester_name": ""}, "requester_name"),
    ({"current_company": None}, "current_company"),
    ({"new_company": ""}, "new_company"),
    ({"new_company": "read-right"}, "new_company"),
    ({"kind": "add", "modalities": []}, "modalities"),
])
async def test_incomplete_requests_are_refused_with_the_field(world: World, change, field) -> None:
    _, _, staff = await setup(world)
    r = await staff.post("/api/switch-requests", json=request_body(**change))
    assert r.status == 422
    assert (await r.json())["error"]["field"] == field


async def test_operator_enters_a_written_request(world: World) -> None:
    pid, _, _ = await setup(world, last_case_days_ago=None)
    op = await world.as_operator()
    r = await op.post("/api/switch-requests", json=request_body(statement=""))
    assert (await r.json())["error"]["field"] == "practice_id"
    r = await op.post("/api/switch-requests", json=request_body(practice_id=pid, statement=""))
    assert (await r.json())["error"]["field"] == "statement"
    r = await op.post("/api/switch-requests", json=request_body(practice_id=pid))
    body = await r.json()
    assert body["source"] == "operator" and body["state"] == "completed"


async def test_switch_request_scoping(world: World) -> None:
    pid, _, staff = await setup(world)
    sr = await submit(staff)
    other_pid, _ = await add_practice(world.hub, "oak-vets", {world.companies["read-right"]: ["DX"]})
    other = await world.api.as_role("practice_staff", practice_id=other_pid)
    assert (await other.get(f"/api/switch-requests/{sr['id']}")).status == 404
    for slug in ("read-right", "scan-co"):  # both companies involved may read it
        c = await world.as_company(slug)
        assert (await c.get(f"/api/switch-requests/{sr['id']}")).status == 200
