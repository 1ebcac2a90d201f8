"""Draft switch requests through the API: a draft (as the inbound email plugin opens it through
hub.accounts.drafts) opens no window and tells no one; only operators see it; confirming it
makes a request with the response window, discarding it is audited; both happen once."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from hub.accounts import drafts
from hub.accounts.models import SwitchRequest
from hub.db.models import Account, AuditEntry, Job

from .accounts_world import READ_RIGHT, SCAN_CO, T0, World, add_case, add_practice

STATEMENT = "We would like to move our teleradiology to ScanCo from next month. Dr Ada Brown"


async def draft_for(world: World, statement: str = STATEMENT, *, accounts: tuple[str, ...] = ("read-right",)
                    ) -> tuple[int, int]:
    """A practice with a recent case, and a draft of what it wrote; (practice id, draft id)."""
    pid, ids = await add_practice(world.hub, "elm-vets", {world.companies[c]: ["DX"] for c in accounts})
    rr = world.companies["read-right"]
    await add_case(world.hub, pid, ids[rr], rr, T0 - timedelta(days=30))
    async with world.hub.transaction() as s:
        sr = await drafts.open_draft(s, world.hub, practice_id=pid, statement=statement,
                                     statement_ref="inbound_email:7", requester_email="ada@elm.example",
                                     requester_name="Ada Brown", actor="inbound-email")
        return pid, sr.id


async def test_a_draft_opens_no_window_and_tells_no_one(world: World) -> None:
    pid, draft_id = await draft_for(world)
    await world.run_jobs()
    assert world.mails() == []
    op = await world.as_operator()
    r = await op.get("/api/switch-requests?state=draft")
    [item] = (await r.json())["items"]
    assert item["id"] == draft_id and item["state"] == "draft" and item["statement_ref"] == "inbound_email:7"
    # the company it names is read; the current one is the practice's only account
    assert item["new_company_id"] == world.companies["scan-co"]
    assert item["current_company_id"] == world.companies["read-right"]
    assert item["deadline_at"] is None and item["notified_at"] is None and item["requester_authorised"] is False
    async with world.hub.sessionmaker() as s:
        jobs = (await s.execute(select(Job.kind))).scalars().all()
        accounts = (await s.execute(select(Account.status).where(Account.practice_id == pid))).scalars().all()
    assert "accounts.switch_deadline" not in jobs and accounts == ["active"]


async def test_only_operators_see_or_act_on_a_draft(world: World) -> None:
    pid, draft_id = await draft_for(world)
    staff = await world.api.as_role("practice_staff", practice_id=pid)
    for caller in (staff, await world.as_company("read-right"), await world.as_company("scan-co")):
        assert (await caller.get(f"/api/switch-requests/{draft_id}")).status == 404
        assert (await (await caller.get("/api/switch-requests")).json())["items"] == []
        assert (await (await caller.get("/api/switch-requests?state=draft")).json())["items"] == []
        r = await caller.post(f"/api/switch-requests/{draft_id}/confirm", json={"requester_authorised": True})
        assert r.status == 404
        r = await caller.post(f"/api/switch-requests/{draft_id}/discard", json={"reason": "mine now"})
        assert r.status == 404
    async with world.hub.sessionmaker() as s:
        assert (await s.get(SwitchRequest, draft_id)).state == "draft"


async def test_confirming_makes_the_request_with_its_window(world: World) -> None:
    _, draft_id = await draft_for(world)
    op = await world.as_operator()
    r = await op.post(f"/api/switch-requests/{draft_id}/confirm", json={})
    assert r.status == 422 and (await r.json())["error"]["field"] == "requester_authorised"
    r = await op.post(f"/api/switch-requests/{draft_id}/confirm",
                      json={"requester_authorised": True, "note": "phoned the practice to check"})
    assert r.status == 200, await r.text()
    sr = await r.json()
    assert sr["state"] == "awaiting_response" and sr["outcome"] == "notify_current"
    assert sr["deadline_at"] is not None and sr["statement"] == STATEMENT
    assert sr["statement_ref"] == "inbound_email:7" and sr["source"] == "email"
    assert [s["step"] for s in sr["steps"]] == ["drafted", "confirmed", "submitted", "notified"]
    await world.run_jobs()
    [mail] = world.mails(READ_RIGHT)  # the current company is asked, as for any request
    assert "action=object" in mail.get_body(preferencelist=("plain",)).get_content()
    # now everyone it concerns sees it
    company = await world.as_company("scan-co")
    assert (await company.get(f"/api/switch-requests/{draft_id}")).status == 200
    again = await op.post(f"/api/switch-requests/{draft_id}/confirm", json={"requester_authorised": True})
    assert again.status == 409


async def test_the_operator_picks_what_the_email_did_not_say(world: World) -> None:
    _, draft_id = await draft_for(world, "Please change our radiology company.", accounts=("read-right", "scan-co"))
    op = await world.as_operator()
    draft = await (await op.get(f"/api/switch-requests/{draft_id}")).json()
    assert draft["current_company_id"] is None and draft["new_company_id"] is None  # two accounts, no name
    r = await op.post(f"/api/switch-requests/{draft_id}/confirm", json={"requester_authorised": True})
    assert r.status == 422 and (await r.json())["error"]["field"] == "current_company"
    r = await op.post(f"/api/switch-requests/{draft_id}/confirm",
                      json={"requester_authorised": True, "current_company": "read-right", "new_company": "read-right"})
    assert r.status == 422 and (await r.json())["error"]["code"] == "same_company"
    r = await op.post(f"/api/switch-requests/{draft_id}/confirm",
                      json={"requester_authorised": True, "current_company": "scan-co",
                            "new_company": "read-right", "kind": "add", "modalities": ["CT"]})
    assert r.status == 200, await r.text()
    sr = await r.json()
    assert sr["kind"] == "add" and sr["state"] != "draft"
    assert (sr["current_company_id"], sr["new_company_id"]) == (world.companies["scan-co"], world.companies["read-right"])


async def test_discarding_needs_a_reason_and_is_audited(world: World) -> None:
    _, draft_id = await draft_for(world)
    op = await world.as_operator()
    r = await op.post(f"/api/switch-requests/{draft_id}/discard", json={"reason": ""})
    assert r.status == 422 and (await r.json())["error"]["field"] == "reason"
    r = await op.post(f"/api/switch-requests/{draft_id}/discard", json={"reason": "a question, not a request"})
    sr = await r.json()
    assert r.status == 200 and sr["state"] == "discarded" and sr["reason"] == "a question, not a request"
    r = await op.post(f"/api/switch-requests/{draft_id}/confirm", json={"requester_authorised": True})
    assert r.status == 409
    async with world.hub.sessionmaker() as s:
        audit = (await s.execute(select(AuditEntry).where(AuditEntry.action == "switch_request.discarded"))
                 ).scalar_one()
    assert audit.actor.startswith("operator") and audit.after["reason"] == "a question, not a request"
    assert world.mails(SCAN_CO) == [] and world.mails(READ_RIGHT) == []
    assert [i["id"] for i in (await (await op.get("/api/switch-requests?state=discarded")).json())["items"]] == [draft_id]
