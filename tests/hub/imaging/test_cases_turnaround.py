"""Turnaround: a case past its company's turnaround is flagged and raises an operator event;
the figures per modality and urgency, as JSON and CSV."""

from __future__ import annotations

import csv
import io

from sqlalchemy import select

from hub.db.models import HubEvent

from .cases_helpers import ids, make_stable, send


async def test_overdue_flag_and_figures(hub_factory, dicom_config_data, frozen_clock, api_for, tmp_path):
    data = dicom_config_data()
    data["companies"][0]["turnaround_hours"] = {"routine": 24, "stat": 1}
    hub = await hub_factory(data, clock=frozen_clock)
    start = frozen_clock.now()
    for n in range(3):
        await send(hub, tmp_path / f"ct{n}", 1, modality="CT")
    await send(hub, tmp_path / "dx", 1, modality="DX")
    await make_stable(hub, frozen_clock, seconds=60)
    known = await ids(hub)
    api = await api_for(hub)
    staff = await api.as_role("practice_staff", practice_id=known["practice:vet-one"])
    rad = await api.as_role("company_admin", company_id=known["company:rad-co"])
    async with staff.get("/api/studies") as rsp:
        studies = {(s["modality"], s["id"]) for s in (await rsp.json())["items"]}
    ct_ids = sorted(i for m, i in studies if m == "CT")
    dx_id = next(i for m, i in studies if m == "DX")
    cases = []
    for study_id, urgency in ((ct_ids[0], "stat"), (ct_ids[1], "stat"), (ct_ids[2], "stat"), (dx_id, "routine")):
        async with staff.post("/api/cases", json={"study_id": study_id, "urgency": urgency}) as rsp:
            assert rsp.status == 201, await rsp.text()
            cases.append(await rsp.json())
    assert cases[0]["due_at"].startswith((frozen_clock.now()).strftime("%Y-%m-%dT10"))  # 1 h

    async def report(case, after_minutes):
        frozen_clock.advance(minutes=after_minutes)
        async with rad.post(f"/api/cases/{case['id']}/report", json={"text": "ok", "radiologist": "Dr R"}) as rsp:
            assert rsp.status == 201

    await report(cases[0], 30)  # stat, reported after 30 min
    await report(cases[1], 20)  # stat, after 50 min
    await hub.jobs.run_until_idle()
    async with rad.get("/api/cases", params={"overdue": "true"}) as rsp:
        assert (await rsp.json())["items"] == []

    frozen_clock.advance(minutes=15)  # 65 min: the third stat case is late
    await hub.jobs.run_until_idle()
    async with rad.get("/api/cases", params={"overdue": "true"}) as rsp:
        assert [c["id"] for c in (await rsp.json())["items"]] == [cases[2]["id"]]
    async with hub.sessionmaker() as s:
        [event] = (await s.execute(select(HubEvent).where(HubEvent.kind == "case.overdue"))).scalars()
    assert event.data["case_id"] == cases[2]["id"] and "past its turnaround" in event.message
    await report(cases[2], 55)  # after 120 min
    await hub.jobs.run_until_idle()

    window = {"from": start.isoformat(), "to": frozen_clock.now().replace(year=2027).isoformat()}
    async with rad.get("/api/reports/turnaround", params=window) as rsp:
        assert rsp.status == 200, await rsp.text()
        rows = {(r["modality"], r["urgency"]): r for r in (await rsp.json())["rows"]}
    assert rows[("CT", "stat")] == {"modality": "CT", "urgency": "stat", "cases": 3, "reported": 3,
                                    "overdue": 1, "median_hours": 0.83, "p90_hours": 2.0}
    assert rows[("DX", "routine")]["reported"] == 0 and rows[("DX", "routine")]["median_hours"] is None
    async with rad.get("/api/reports/turnaround", params={**window, "format": "csv"}) as rsp:
        assert rsp.content_type == "text/csv"
        table = list(csv.DictReader(io.StringIO(await rsp.text())))
    assert {(r["modality"], r["urgency"], r["median_hours"]) for r in table} == {
        ("CT", "stat", "0.83"), ("DX", "routine", "")}
    sono = await api.as_role("company_admin", company_id=known["company:sono-co"])
    async with sono.get("/api/reports/turnaround", params=window) as rsp:
        assert (await rsp.json())["rows"] == []  # another company's cases are not in its figures
    async with rad.get("/api/reports/turnaround", params={**window, "company_id": known["company:sono-co"]}) as rsp:
        assert rsp.status == 403
