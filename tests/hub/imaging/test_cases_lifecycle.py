"""Every case status change, its history row (actor, time) and its vethub_case_status event;
the 409, 422 and 403 answers to a submission."""

from __future__ import annotations

from sqlalchemy import select, update

from hub.db.models import Account, Job
from hub.hookspecs import hookimpl
from hub.imaging.models import Case

from .cases_helpers import ids, make_stable, send


class CaseProbe:
    def __init__(self) -> None:
        self.changes: list = []

    @hookimpl
    def vethub_case_status(self, hub, change):
        self.changes.append(change)


def _seen(probe: CaseProbe, case_id: int) -> list[tuple[str, str | None, str]]:
    return [(str(c.status), c.previous and str(c.previous), c.actor) for c in probe.changes
            if c.case_id == case_id]


async def _hub(hub_factory, dicom_config_data, clock, *, destination=None, jobs=None):
    data = dicom_config_data()
    if destination is not None:
        data["companies"][0]["destination"] = destination
    if jobs:
        data["jobs"] = jobs
    probe = CaseProbe()
    hub = await hub_factory(data, clock=clock, plugins=[("case-probe", probe)])
    return hub, probe


async def test_hub_delivery_statuses_and_events(hub_factory, dicom_config_data, frozen_clock, api_for, tmp_path):
    hub, probe = await _hub(hub_factory, dicom_config_data, frozen_clock)
    await send(hub, tmp_path / "ct", 2, modality="CT")
    await make_stable(hub, frozen_clock)
    known = await ids(hub)
    api = await api_for(hub)
    staff = await api.as_role("practice_staff", practice_id=known["practice:vet-one"], name="dr-who")
    rad = await api.as_role("company_admin", company_id=known["company:rad-co"], name="reader")
    async with staff.post("/api/cases", json={"study_id": known["study:CT"], "question": "mass?"}) as rsp:
        case = await rsp.json()
    submitted_at = frozen_clock.now()
    frozen_clock.advance(hours=2)
    async with rad.post(f"/api/cases/{case['id']}/report", json={"text": "No mass.", "radiologist": "Dr R"}) as rsp:
        assert rsp.status == 201
    async with staff.post(f"/api/cases/{case['id']}/cancel", json={"reason": "too late"}) as rsp:
        assert rsp.status == 409 and (await rsp.json())["error"]["code"] == "invalid_transition"
    await hub.jobs.run_until_idle()

    assert _seen(probe, case["id"]) == [
        ("submitted", None, "practice_staff:dr-who"), ("routed", "submitted", "routing policy"),
        ("delivered", "routed", "hub"), ("reported", "delivered", "company_admin:reader"),
    ]
    assert [c.at for c in probe.changes] == [submitted_at] * 3 + [frozen_clock.now()]
    async with staff.get(f"/api/cases/{case['id']}") as rsp:
        history = (await rsp.json())["status_history"]
    assert [(h["status"], h["actor"]) for h in history] == [
        (str(c.status), c.actor) for c in probe.changes]


async def test_cancel_before_delivery_stops_the_forward(
    hub_factory, dicom_config_data, frozen_clock, dicom_peer, api_for, tmp_path
):
    dicom_peer.down()
    dest = {"host": "127.0.0.1", "port": dicom_peer.port, "ae_title": dicom_peer.ae_title}
    hub, probe = await _hub(hub_factory, dicom_config_data, frozen_clock, destination=dest)
    await send(hub, tmp_path / "ct", 2, modality="CT")
    await make_stable(hub, frozen_clock)
    known = await ids(hub)
    staff = await (await api_for(hub)).as_role("practice_staff", practice_id=known["practice:vet-one"])
    async with staff.post("/api/cases", json={"study_id": known["study:CT"]}) as rsp:
        case = await rsp.json()
    assert case["status"] == "routed" and case["delivery"] == "dicom"
    await hub.jobs.run_until_idle()  # the peer is down: the forward will retry
    async with staff.post(f"/api/cases/{case['id']}/cancel", json={"reason": "wrong patient"}) as rsp:
        assert rsp.status == 200, await rsp.text()
        assert (await rsp.json())["status"] == "cancelled"
    dicom_peer.accept()
    frozen_clock.advance(hours=1)
    await hub.jobs.run_until_idle()
    assert dicom_peer.received_uids() == []  # withdrawn before delivery: nothing sent
    assert _seen(probe, case["id"])[-1] == ("cancelled", "routed", "practice_staff:test")
    async with hub.sessionmaker() as s:
        assert (await s.get(Case, case["id"])).status == "cancelled"


async def test_failed_with_its_reason(hub_factory, dicom_config_data, frozen_clock, dicom_peer, api_for, tmp_path):
    dicom_peer.refuse()
    dest = {"host": "127.0.0.1", "port": dicom_peer.port, "ae_title": dicom_peer.ae_title}
    hub, probe = await _hub(hub_factory, dicom_config_data, frozen_clock, destination=dest,
                            jobs={"max_attempts": 1})
    await send(hub, tmp_path / "ct", 1, modality="CT")
    await make_stable(hub, frozen_clock)
    known = await ids(hub)
    staff = await (await api_for(hub)).as_role("practice_staff", practice_id=known["practice:vet-one"])
    async with staff.post("/api/cases", json={"study_id": known["study:CT"]}) as rsp:
        case = await rsp.json()
    await hub.jobs.run_until_idle()
    async with staff.get(f"/api/cases/{case['id']}") as rsp:
        body = await rsp.json()
    assert body["status"] == "failed" and "association rejected" in body["failure_reason"]
    [failed] = [c for c in probe.changes if c.status == "failed"]
    assert failed.note == body["failure_reason"] and failed.actor == "dicom forwarder"


async def test_submission_refusals(hub_factory, dicom_config_data, frozen_clock, api_for, tmp_path):
    data = dicom_config_data()
    data["companies"].append({"slug": "old-co", "name": "Old Co", "modalities": ["XA"]})
    data["accounts"].append({"practice": "vet-one", "company": "old-co"})
    hub = await hub_factory(data, clock=frozen_clock)
    await send(hub, tmp_path / "ct", 1, modality="CT")
    await send(hub, tmp_path / "xa", 1, modality="XA")
    await send(hub, tmp_path / "us", 1, modality="US")
    await make_stable(hub, frozen_clock)
    known = await ids(hub)
    staff = await (await api_for(hub)).as_role("practice_staff", practice_id=known["practice:vet-one"])

    # The same study twice: 409 with the existing case, unless a second opinion is asked for.
    async with staff.post("/api/cases", json={"study_id": known["study:CT"]}) as rsp:
        first = await rsp.json()
    async with staff.post("/api/cases", json={"study_id": known["study:CT"]}) as rsp:
        assert rsp.status == 409
        body = await rsp.json()
    assert body["error"]["code"] == "duplicate_case" and body["case"]["id"] == first["id"]
    async with staff.post("/api/cases", json={"study_id": known["study:CT"], "second_opinion": True}) as rsp:
        assert rsp.status == 201
        assert (await rsp.json())["second_opinion"] is True

    # The practice moved its XA reading away from Old Co: 422 no_route naming the modality,
    # not a 403 pointing at the old company.
    async with hub.transaction() as s:
        await s.execute(update(Account).where(Account.company_id == known["company:old-co"])
                        .values(status="switched", approved_for_access=False, modalities=[]))
    async with staff.post("/api/cases", json={"study_id": known["study:XA"]}) as rsp:
        assert rsp.status == 422
        error = (await rsp.json())["error"]
    assert error["code"] == "no_route" and "reads XA" in error["message"]
    assert "Old Co" not in error["message"]

    # A suspended account: 403 naming the company to contact.
    async with hub.transaction() as s:
        await s.execute(update(Account).where(Account.company_id == known["company:sono-co"])
                        .values(approved_for_access=False))
    async with staff.post("/api/cases", json={"study_id": known["study:US"]}) as rsp:
        assert rsp.status == 403
        error = (await rsp.json())["error"]
    assert error["code"] == "account_not_approved" and "contact Sono Co" in error["message"]

    # Bad input: an attachment that is not what it says, an unknown urgency. Nothing stored.
    async with staff.post("/api/cases", json={
            "study_id": known["study:US"], "urgency": "whenever"}) as rsp:
        assert rsp.status == 422 and (await rsp.json())["error"]["field"] == "urgency"
    async with staff.post("/api/cases", json={
            "study_id": known["study:CT"], "second_opinion": True, "attachments": [
                {"filename": "x.pdf", "content_type": "application/pdf", "content_base64": "aGVsbG8="}]}) as rsp:
        assert rsp.status == 422 and (await rsp.json())["error"]["code"] == "invalid_attachment"
    async with hub.sessionmaker() as s:
        assert len((await s.execute(select(Case))).scalars().all()) == 2
        assert (await s.execute(select(Job).where(Job.kind == "dicom.forward_case"))).scalars().all() == []
