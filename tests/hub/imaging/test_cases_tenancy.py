"""Every case route answers another company's admin and another practice's staff with 404."""

from __future__ import annotations

import pydicom
from sqlalchemy import update

from hub.db.models import Account

from .cases_helpers import PDF, b64, ids, make_stable, send


async def test_case_routes_are_scoped(hub_factory, dicom_config_data, frozen_clock, api_for, tmp_path):
    data = dicom_config_data()
    data["practices"].append({"slug": "vet-two", "name": "Vet Two", "calling_aes": ["SCANNER2"]})
    data["accounts"].append({"practice": "vet-two", "company": "rad-co"})
    hub = await hub_factory(data, clock=frozen_clock)
    sent = await send(hub, tmp_path / "ct", 2, modality="CT")
    await make_stable(hub, frozen_clock)
    known = await ids(hub)
    api = await api_for(hub)
    staff = await api.as_role("practice_staff", practice_id=known["practice:vet-one"])
    rad = await api.as_role("company_admin", company_id=known["company:rad-co"])
    other_staff = await api.as_role("practice_staff", practice_id=known["practice:vet-two"])
    other_company = await api.as_role("company_admin", company_id=known["company:sono-co"])

    async with other_staff.post("/api/cases", json={"study_id": known["study:CT"]}) as rsp:
        assert rsp.status == 404  # another practice's study
    async with staff.post("/api/cases", json={"study_id": known["study:CT"], "attachments": [
            {"filename": "a.pdf", "content_type": "application/pdf", "content_base64": b64(PDF)}]}) as rsp:
        case = await rsp.json()
    cid, aid = case["id"], case["attachments"][0]["id"]
    async with rad.post(f"/api/cases/{cid}/report", json={"text": "ok", "radiologist": "Dr R"}) as rsp:
        rid = (await rsp.json())["id"]
    first = pydicom.dcmread(sent[0])
    study, series, sop = first.StudyInstanceUID, first.SeriesInstanceUID, first.SOPInstanceUID
    reads = [f"/api/cases/{cid}", f"/api/cases/{cid}/images.zip", f"/api/cases/{cid}/attachments/{aid}",
             f"/api/cases/{cid}/reports", f"/api/cases/{cid}/reports/{rid}/file",
             f"/dicomweb/studies/{study}", f"/dicomweb/studies/{study}/series/{series}",
             f"/dicomweb/studies/{study}/series/{series}/instances/{sop}"]

    for owner in (staff, rad):
        for path in reads:
            async with owner.get(path) as rsp:
                assert rsp.status == 200, (path, await rsp.text())
    for stranger in (other_staff, other_company):
        for path in reads:
            async with stranger.get(path) as rsp:
                assert rsp.status == 404, path
        async with stranger.get("/api/cases") as rsp:
            assert (await rsp.json())["items"] == []
    async with other_company.post(f"/api/cases/{cid}/report", json={"text": "x", "radiologist": "y"}) as rsp:
        assert rsp.status == 404
    for path, body in ((f"/api/cases/{cid}/cancel", {}), (f"/api/cases/{cid}/reports/{rid}/share", {})):
        async with other_staff.post(path, json=body) as rsp:
            assert rsp.status == 404, path
    async with other_staff.get("/api/reports/turnaround", params={
            "from": "2026-01-01T00:00:00Z", "to": "2027-01-01T00:00:00Z"}) as rsp:
        assert rsp.status == 403  # a company admin's figure

    # After the practice leaves Rad Co, Rad Co still sees the case it read.
    async with hub.transaction() as s:
        await s.execute(update(Account).where(Account.company_id == known["company:rad-co"],
                                              Account.practice_id == known["practice:vet-one"])
                        .values(status="switched", approved_for_access=False))
    async with rad.get(f"/api/cases/{cid}") as rsp:
        assert rsp.status == 200
    async with rad.get(f"/dicomweb/studies/{study}") as rsp:
        assert rsp.status == 200
