"""The PIMS patient is matched and shown; a shareable report lets the owner be told "results are
ready, call us" through the contact verdict (category ``results``), never the report itself."""

from __future__ import annotations

from sqlalchemy import select

from hub.messaging.models import Communication
from hub.pims.models import Client, Patient

from .cases_helpers import body_of, ids, mails, make_stable, send

REPORT = "Moderate cardiomegaly; recommend echocardiography."


async def _seed_pims(hub, practice_id: int, *, comms_disabled: bool = False) -> int:
    async with hub.transaction() as s:
        s.add(Client(practice_id=practice_id, external_id="C1", first_name="Jane", last_name="Smith",
                     email="jane@example.com", status="active", comms_disabled=comms_disabled))
        patient = Patient(practice_id=practice_id, external_id="A-1", client_external_id="C1",
                          name="Rex", species="Canine", breed="Collie", status="active")
        s.add(patient)
        await s.flush()
        return patient.id


async def _reported_case(hub, clock, api_for, tmp_path, **pims):
    await send(hub, tmp_path / "dx", 1, modality="DX")  # PatientID "A-1", as the PIMS knows Rex
    await make_stable(hub, clock)
    known = await ids(hub)
    patient_id = await _seed_pims(hub, known["practice:vet-one"], **pims)
    api = await api_for(hub)
    staff = await api.as_role("practice_staff", practice_id=known["practice:vet-one"])
    rad = await api.as_role("company_admin", company_id=known["company:rad-co"])
    async with staff.post("/api/cases", json={"study_id": known["study:DX"], "question": "heart?"}) as rsp:
        case = await rsp.json()
    async with rad.post(f"/api/cases/{case['id']}/report", json={"text": REPORT, "radiologist": "Dr R"}) as rsp:
        report = await rsp.json()
    return case, report, staff, rad, patient_id


async def test_owner_told_results_are_ready(hub_factory, dicom_config_data, frozen_clock, api_for, tmp_path):
    data = dicom_config_data(email={"backend": "maildir", "maildir_path": "mail", "from_address": "hub@vet.example"})
    hub = await hub_factory(data, clock=frozen_clock)
    case, report, staff, rad, patient_id = await _reported_case(hub, frozen_clock, api_for, tmp_path)
    assert case["patient"]["source"] == "pims" and case["patient"]["name"] == "Rex"
    assert case["patient"]["owner"] == "Jane Smith" and case["patient"]["breed"] == "Collie"

    async with rad.post(f"/api/cases/{case['id']}/reports/{report['id']}/share", json={}) as rsp:
        assert rsp.status == 403  # the practice decides what its client hears
    async with staff.post(f"/api/cases/{case['id']}/reports/{report['id']}/share", json={}) as rsp:
        assert rsp.status == 200, await rsp.text()
        shared = await rsp.json()
    assert shared["report"]["shareable"] is True
    assert shared["channel"] == "email" and shared["verdict"] == "allow"
    await hub.jobs.run_until_idle()
    [mail] = [m for m in mails(hub) if m["To"] == "jane@example.com"]
    text = body_of(mail)
    assert "results" in text and "call us" in text and "Rex" in text
    assert "cardiomegaly" not in text and "cardiomegaly" not in mail["Subject"]
    async with hub.sessionmaker() as s:
        comm = await s.get(Communication, shared["communication_id"])
    assert comm.category == "results" and comm.client_id is not None


async def test_owner_with_comms_disabled_is_not_told(hub_factory, dicom_config_data, frozen_clock, api_for, tmp_path):
    data = dicom_config_data(email={"backend": "maildir", "maildir_path": "mail", "from_address": "hub@vet.example"})
    hub = await hub_factory(data, clock=frozen_clock)
    case, report, staff, _rad, _ = await _reported_case(hub, frozen_clock, api_for, tmp_path, comms_disabled=True)
    async with staff.post(f"/api/cases/{case['id']}/reports/{report['id']}/share", json={}) as rsp:
        shared = await rsp.json()
    assert shared["verdict"] == "veto" and shared["status"] == "suppressed"
    await hub.jobs.run_until_idle()
    assert [m for m in mails(hub) if m["To"] == "jane@example.com"] == []
    async with hub.sessionmaker() as s:
        comm = (await s.execute(select(Communication).where(Communication.category == "results"))).scalar_one()
    assert any(r["code"] == "pims_comms_disabled" for r in comm.verdict_reasons)
