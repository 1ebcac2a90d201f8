"""The quick-start config, untouched: a case goes from storescu to the company's report and back."""

from __future__ import annotations

import io
import zipfile

import pydicom
import pytest
from sqlalchemy import select

from hub.imaging.dicomweb import storage_root
from hub.imaging.models import Instance
from hub.testing.dicom import write_synthetic_series

from .cases_helpers import PDF, b64, body_of, example_config, ids, mails, parse_multipart, storescu

pytestmark = pytest.mark.slow


async def test_quick_start_case_round_trip(hub_factory, db_url, frozen_clock, api_for, tmp_path):
    hub = await hub_factory(config=example_config(db_url, tmp_path), clock=frozen_clock)
    sent = write_synthetic_series(tmp_path / "study", 3, modality="CR", animal_name="Rex",
                                  animal_id="P-77", species="Canine")
    await storescu(hub, tmp_path / "study", calling_ae="DEMOCLINIC")
    known = await ids(hub)
    api = await api_for(hub)
    staff = await api.as_role("practice_staff", practice_id=known["practice:demo-clinic"])
    company = await api.as_role("company_admin", company_id=known["company:demo-rads"])
    request = {"study_id": known["study:CR"], "clinical_history": "Limping left fore for 3 weeks.",
               "question": "Fracture of the radius?", "urgency": "priority",
               "attachments": [{"filename": "referral.pdf", "content_type": "application/pdf",
                                "content_base64": b64(PDF)}]}

    # Still receiving (stable_age 60 s has not passed): refused unless said explicitly.
    async with staff.post("/api/cases", json=request) as rsp:
        assert rsp.status == 409 and (await rsp.json())["error"]["code"] == "study_receiving"
    frozen_clock.advance(seconds=61)
    await hub.jobs.run_until_idle()

    async with staff.post("/api/cases", json=request) as rsp:
        assert rsp.status == 201, await rsp.text()
        case = await rsp.json()
    assert case["status"] == "delivered" and case["delivery"] == "hub"
    assert case["patient"] == {"source": "dicom", "name": "Rex", "patient_id": "P-77",
                               "species": "Canine", "owner": "Smith^Jane"}
    assert [a["filename"] for a in case["attachments"]] == ["referral.pdf"]
    assert [(h["status"], h["actor"]) for h in case["status_history"]] == [
        ("submitted", "practice_staff:test"), ("routed", "routing policy"), ("delivered", "hub")]
    await hub.jobs.run_until_idle()

    # The company is told, at its reading address, with the request and a link.
    [notice] = [m for m in mails(hub) if m["To"] == "reads@demo-rads.example"]
    text = body_of(notice)
    assert "[PRIORITY]" in notice["Subject"]
    assert "Fracture of the radius?" in text and "Limping left fore" in text and "referral.pdf" in text
    assert f"http://127.0.0.1:8080/api/cases/{case['id']}" in text

    # The company lists it, downloads the zip and the attachment.
    async with company.get("/api/cases") as rsp:
        assert [c["id"] for c in (await rsp.json())["items"]] == [case["id"]]
    async with company.get(f"/api/cases/{case['id']}/attachments/{case['attachments'][0]['id']}") as rsp:
        assert rsp.status == 200 and await rsp.read() == PDF
    async with company.get(f"/api/cases/{case['id']}/images.zip") as rsp:
        assert rsp.status == 200 and rsp.content_type == "application/zip"
        archive = zipfile.ZipFile(io.BytesIO(await rsp.read()))
    async with hub.sessionmaker() as s:
        stored = {i.sop_instance_uid: (storage_root(hub) / i.path).read_bytes()
                  for i in (await s.execute(select(Instance))).scalars()}
    zipped = {name.rsplit("/", 1)[1][:-4]: archive.read(name) for name in archive.namelist()}
    assert zipped == stored and len(zipped) == 3

    # WADO-RS with the same token: every part is the stored file, byte for byte.
    study_uid = pydicom.dcmread(sent[0]).StudyInstanceUID
    async with company.get(f"/dicomweb/studies/{study_uid}") as rsp:
        assert rsp.status == 200, await rsp.text()
        assert rsp.headers["Content-Type"].startswith('multipart/related; type="application/dicom"')
        parts = parse_multipart(rsp.headers["Content-Type"], await rsp.read())
    assert {h["Content-Type"] for h, _ in parts} == {"application/dicom"}
    by_uid = {pydicom.dcmread(io.BytesIO(p)).SOPInstanceUID: p for _, p in parts}
    assert by_uid == stored
    for path in sent:
        original = pydicom.dcmread(path)
        served = pydicom.dcmread(io.BytesIO(by_uid[original.SOPInstanceUID]))
        assert served.PixelData == original.PixelData and served.PatientName == "Rex"
    series_uid = pydicom.dcmread(sent[0]).SeriesInstanceUID
    sop_uid = pydicom.dcmread(sent[1]).SOPInstanceUID
    async with company.get(f"/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}") as rsp:
        [(_, one)] = parse_multipart(rsp.headers["Content-Type"], await rsp.read())
    assert one == stored[sop_uid]
    async with api.client.get(f"/dicomweb/studies/{study_uid}") as rsp:
        assert rsp.status == 401  # no token, no images

    # The report comes back; the practice is emailed (company in Cc) and downloads it.
    async with company.post(f"/api/cases/{case['id']}/report", json={
            "text": "Transverse fracture of the distal left radius.", "radiologist": "Dr. A. Reader",
            "pdf_base64": b64(PDF)}) as rsp:
        assert rsp.status == 201, await rsp.text()
        report = await rsp.json()
    async with staff.get(f"/api/cases/{case['id']}") as rsp:
        body = await rsp.json()
    assert body["status"] == "reported" and body["reported_at"] is not None
    await hub.jobs.run_until_idle()
    [mail] = [m for m in mails(hub) if m["To"] == "frontdesk@demo-clinic.example"]
    assert "reads@demo-rads.example" in mail["Cc"]
    assert "Transverse fracture" in body_of(mail) and "Dr. A. Reader" in body_of(mail)
    async with staff.get(f"/api/cases/{case['id']}/reports/{report['id']}/file") as rsp:
        assert rsp.status == 200 and rsp.content_type == "application/pdf"
        assert await rsp.read() == PDF

    # An addendum is a second report linked to the first; the first is unchanged.
    async with company.post(f"/api/cases/{case['id']}/report", json={
            "text": "Addendum: also a fissure of the ulna.", "radiologist": "Dr. A. Reader"}) as rsp:
        addendum = await rsp.json()
    assert addendum["addendum_to_id"] == report["id"]
    async with staff.get(f"/api/cases/{case['id']}/reports") as rsp:
        items = (await rsp.json())["items"]
    assert [(r["id"], r["text"]) for r in items] == [
        (report["id"], "Transverse fracture of the distal left radius."),
        (addendum["id"], "Addendum: also a fissure of the ulna.")]
    async with staff.get(f"/api/cases/{case['id']}/reports/{addendum['id']}/file") as rsp:
        assert rsp.content_type == "text/plain" and "fissure of the ulna" in await rsp.text()
