"""Reports: only the reading company's AE reports by C-STORE; bad reports and attachments are
refused with nothing stored."""

from __future__ import annotations

import asyncio

import pydicom
from sqlalchemy import select

from hub.imaging.models import Case, CaseAttachment, CaseReport

from .cases_helpers import b64, ids, make_stable, report_sr, send, storescu

COMPANY_AE = "RADREPORTS"


async def test_only_the_companys_ae_reports_by_cstore(
    hub_factory, dicom_config_data, frozen_clock, api_for, tmp_path
):
    data = dicom_config_data()
    data["companies"][0]["report_ae"] = COMPANY_AE
    data["practices"][0]["calling_aes"].append(COMPANY_AE)
    hub = await hub_factory(data, clock=frozen_clock)
    sent = await send(hub, tmp_path / "ct", 1, modality="CT")
    await make_stable(hub, frozen_clock)
    known = await ids(hub)
    staff = await (await api_for(hub)).as_role("practice_staff", practice_id=known["practice:vet-one"])
    async with staff.post("/api/cases", json={"study_id": known["study:CT"]}) as rsp:
        case = await rsp.json()
    study_uid = pydicom.dcmread(sent[0]).StudyInstanceUID

    # The practice's own SR (its modality's calling AE) is just another instance ...
    for name, text, ae in (("own", "Practice's own note.", "SCANNER1"),
                           ("company", "Normal thorax.", COMPANY_AE)):
        folder = tmp_path / name
        folder.mkdir()
        report_sr(study_uid, text, "Reader^Anna").save_as(folder / "sr.dcm", enforce_file_format=True)
        await storescu(hub, folder, calling_ae=ae)
    # ... the company's, sent after it, reports the case: events arrive in order.
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        async with hub.sessionmaker() as s:
            if (await s.get(Case, case["id"])).status == "reported":
                reports = (await s.execute(select(CaseReport))).scalars().all()
                break
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    assert [(r.text, r.source) for r in reports] == [("Normal thorax.", "dicom")]


async def test_bad_reports_and_attachments(hub_factory, dicom_config_data, frozen_clock, api_for, tmp_path):
    hub = await hub_factory(dicom_config_data(), clock=frozen_clock)
    await send(hub, tmp_path / "ct", 1, modality="CT")
    await make_stable(hub, frozen_clock)
    known = await ids(hub)
    api = await api_for(hub)
    staff = await api.as_role("practice_staff", practice_id=known["practice:vet-one"])
    rad = await api.as_role("company_admin", company_id=known["company:rad-co"])

    too_big = b"%PDF-" + b"0" * (5 * 1024 * 1024)
    async with staff.post("/api/cases", json={"study_id": known["study:CT"], "attachments": [
            {"filename": "big.pdf", "content_type": "application/pdf", "content_base64": b64(too_big)}]}) as rsp:
        assert rsp.status == 413, await rsp.text()  # over the 5 MB attachment limit
    async with staff.post("/api/cases", json={"study_id": known["study:CT"], "attachments": [
            {"filename": "../x.pdf", "content_type": "application/pdf", "content_base64": b64(b"%PDF-1")}]}) as rsp:
        assert rsp.status == 422 and (await rsp.json())["error"]["field"].startswith("attachments")
    big_enough = b"%PDF-1.4\n" + bytes(range(256)) * 4096  # 1 MiB arrives in many chunks
    async with staff.post("/api/cases", json={"study_id": known["study:CT"], "attachments": [
            {"filename": "scan.pdf", "content_type": "application/pdf", "content_base64": b64(big_enough)}]}) as rsp:
        assert rsp.status == 201, await rsp.text()
        case = await rsp.json()
    async with rad.get(f"/api/cases/{case['id']}/attachments/{case['attachments'][0]['id']}") as rsp:
        assert await rsp.read() == big_enough

    async with staff.post(f"/api/cases/{case['id']}/report", json={"text": "x", "radiologist": "y"}) as rsp:
        assert rsp.status == 403  # practices do not report their own cases
    async with rad.post(f"/api/cases/{case['id']}/report", json={"text": "no signer"}) as rsp:
        assert rsp.status == 422 and (await rsp.json())["error"]["field"] == "radiologist"
    async with rad.post(f"/api/cases/{case['id']}/report", json={"radiologist": "Dr R"}) as rsp:
        assert rsp.status == 422 and (await rsp.json())["error"]["code"] == "empty_report"
    async with rad.post(f"/api/cases/{case['id']}/report", json={
            "text": "x", "radiologist": "Dr R", "pdf_base64": b64(b"not a pdf")}) as rsp:
        assert rsp.status == 422
    async with hub.sessionmaker() as s:
        assert (await s.execute(select(CaseReport))).scalars().all() == []
        assert [a.filename for a in (await s.execute(select(CaseAttachment))).scalars()] == ["scan.pdf"]
        assert (await s.get(Case, case["id"])).status == "delivered"
