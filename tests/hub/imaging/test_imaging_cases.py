"""Studies become stable on a durable schedule; cases are routed by modality and forwarded."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import select

from hub.db.models import Company, HubEvent, Job, Practice
from hub.hookspecs import hookimpl
from hub.imaging.models import Case, Study
from hub.testing.dicom import file_meta_of, send_files, write_synthetic_series
from hub.testing.fixtures_dicom import HUB_AE, PRACTICE_AE, dicom_port


class StableProbe:
    def __init__(self) -> None:
        self.studies: list = []

    @hookimpl
    def vethub_study_stable(self, hub, study):
        self.studies.append(study)


async def _send(hub, folder: Path, count: int, modality: str = "CT", **kw) -> list[Path]:
    paths = write_synthetic_series(folder, count, modality=modality, **kw)
    results = await asyncio.to_thread(
        send_files, "127.0.0.1", dicom_port(hub), paths, called_ae=HUB_AE, calling_ae=PRACTICE_AE
    )
    assert {r.status for r in results} == {0}, results
    return paths


async def _study(hub, study_instance_uid: str | None = None) -> Study:
    async with hub.sessionmaker() as s:
        stmt = select(Study)
        if study_instance_uid:
            stmt = stmt.where(Study.study_instance_uid == study_instance_uid)
        return (await s.execute(stmt.order_by(Study.id))).scalars().first()


async def test_study_stable_after_quiet_period_then_auto_submitted_and_delivered(
    hub_factory, dicom_config_data, frozen_clock, dicom_peer, tmp_path
):
    probe = StableProbe()
    data = dicom_config_data(dicom={"stable_age": 30})
    data["companies"][0]["destination"] = {
        "host": "127.0.0.1", "port": dicom_peer.port, "ae_title": dicom_peer.ae_title
    }
    data["accounts"][0]["auto_submit"] = True
    hub = await hub_factory(data, clock=frozen_clock, plugins=[("probe", probe)])

    paths = await _send(hub, tmp_path / "a", 3)
    study_uid = str(file_meta_of(paths[0])[0].get("MediaStorageSOPInstanceUID"))
    study = await _study(hub)
    assert study.status == "receiving"
    assert await hub.jobs.run_until_idle() == 0  # nothing due yet

    frozen_clock.advance(seconds=20)
    more = write_synthetic_series(tmp_path / "b", 1, study_uid=study.study_instance_uid)
    assert {r.status for r in await asyncio.to_thread(
        send_files, "127.0.0.1", dicom_port(hub), more, called_ae=HUB_AE, calling_ae=PRACTICE_AE
    )} == {0}

    frozen_clock.advance(seconds=15)  # 35 s after the first, 15 after the last instance
    assert await hub.jobs.run_until_idle() == 1  # the check re-arms itself
    study = await _study(hub)
    assert study.status == "receiving" and study.instance_count == 4
    assert probe.studies == []

    frozen_clock.advance(seconds=15)  # 30 s after the last instance
    await hub.jobs.run_until_idle()  # stability, then the forward it enqueued
    study = await _study(hub)
    assert study.status == "stable" and study.stable_at == frozen_clock.now()
    assert [s.id for s in probe.studies] == [study.id]
    assert study_uid  # the synthetic series carries its own UIDs

    async with hub.sessionmaker() as s:
        (case,) = (await s.execute(select(Case))).scalars()
        rad = (await s.execute(select(Company).where(Company.slug == "rad-co"))).scalar_one()
    assert case.auto_submitted and case.submitted_by == "auto-submit"
    assert case.company_id == rad.id
    assert case.status == "delivered"
    sent = sorted(str(file_meta_of(p)[0].MediaStorageSOPInstanceUID) for p in [*paths, *more])
    assert sorted(u for u in dicom_peer.received_uids() if u in sent) == sent  # and the request SR

    # A stable study that receives nothing new stays stable; no second case.
    frozen_clock.advance(seconds=120)
    assert await hub.jobs.run_until_idle() == 0
    async with hub.sessionmaker() as s:
        assert len((await s.execute(select(Case))).scalars().all()) == 1


async def test_stability_survives_a_restart(hub_factory, dicom_config_data, frozen_clock, tmp_path):
    """The check is a job row: a new hub on the same database finds and runs it."""
    data = dicom_config_data(dicom={"stable_age": 10})
    hub = await hub_factory(data, clock=frozen_clock)
    await _send(hub, tmp_path / "a", 2)
    await hub.stop()
    hub2 = await hub_factory(data, clock=frozen_clock)
    async with hub2.sessionmaker() as s:
        jobs = (await s.execute(select(Job).where(Job.kind == "imaging.study_stability"))).scalars()
        assert [j.status for j in jobs] == ["queued"]
    frozen_clock.advance(seconds=10)
    assert await hub2.jobs.run_until_idle() == 1
    assert (await _study(hub2)).status == "stable"


async def test_case_refused_when_account_not_approved(
    hub_factory, dicom_config_data, api_for, tmp_path
):
    data = dicom_config_data()
    data["accounts"][0]["approved_for_access"] = False
    hub = await hub_factory(data)
    await _send(hub, tmp_path / "a", 2, modality="CT")
    study = await _study(hub)
    api = await api_for(hub)
    staff = await api.as_role("practice_staff", practice_id=study.practice_id)
    async with staff.post(
        "/api/cases", json={"study_id": study.id, "clinical_history": "cough", "question": "?"}
    ) as rsp:
        assert rsp.status == 403
        error = (await rsp.json())["error"]
    assert error["code"] == "account_not_approved"
    assert error["message"] == (
        "the practice's account with Rad Co is not approved for access (new or suspended); "
        "contact Rad Co to submit cases. Images sent meanwhile are kept."
    )
    async with hub.sessionmaker() as s:
        assert (await s.execute(select(Case))).scalars().all() == []


async def test_auto_submit_refusal_is_an_event(hub_factory, dicom_config_data, frozen_clock, tmp_path):
    data = dicom_config_data(dicom={"stable_age": 5})
    data["accounts"][0].update(auto_submit=True, approved_for_access=False)
    hub = await hub_factory(data, clock=frozen_clock)
    await _send(hub, tmp_path / "a", 1)
    frozen_clock.advance(seconds=5)
    await hub.jobs.run_until_idle()
    async with hub.sessionmaker() as s:
        assert (await s.execute(select(Case))).scalars().all() == []
        (event,) = (await s.execute(
            select(HubEvent).where(HubEvent.kind == "case.auto_submit_refused")
        )).scalars()
    assert "not approved for access" in event.message


async def test_routing_by_modality_across_two_companies(
    hub_factory, dicom_config_data, api_for, tmp_path
):
    data = dicom_config_data()
    data["practices"].append({"slug": "vet-two", "name": "Vet Two"})
    data["accounts"].append({"practice": "vet-two", "company": "rad-co"})
    hub = await hub_factory(data)
    ct = await _send(hub, tmp_path / "ct", 2, modality="CT")
    us = await _send(hub, tmp_path / "us", 2, modality="US")
    xa = await _send(hub, tmp_path / "xa", 1, modality="XA")
    api = await api_for(hub)
    async with hub.sessionmaker() as s:
        practice_id = await s.scalar(select(Practice.id).where(Practice.slug == "vet-one"))
        other_id = await s.scalar(select(Practice.id).where(Practice.slug == "vet-two"))
        companies = {c.slug: c.id for c in (await s.execute(select(Company))).scalars()}
        studies = {st.modality: st for st in (await s.execute(select(Study))).scalars()}
    assert ct and us and xa and set(studies) == {"CT", "US", "XA"}
    staff = await api.as_role("practice_staff", practice_id=practice_id)

    cases = {}
    for modality in ("CT", "US"):
        async with staff.post("/api/cases", json={
            "study_id": studies[modality].id, "clinical_history": f"{modality} history",
            "question": "anything abnormal?", "allow_incomplete": True,
        }) as rsp:
            assert rsp.status == 201, await rsp.text()
            cases[modality] = await rsp.json()
    assert cases["CT"]["company_id"] == companies["rad-co"]
    assert cases["CT"]["route_reason"] == "Rad Co reads CT for this practice"
    assert cases["US"]["company_id"] == companies["sono-co"]
    # Sono Co has no DICOM destination: its cases are delivered in the hub at once.
    assert [h["status"] for h in cases["US"]["status_history"]] == ["submitted", "routed", "delivered"]

    async with staff.post("/api/cases", json={"study_id": studies["XA"].id}) as rsp:
        assert rsp.status == 422
        error = (await rsp.json())["error"]
    assert error["code"] == "no_route"
    assert error["message"] == (
        "the case cannot be routed: no company this practice has an account with reads XA "
        "(Rad Co reads CT, MR, DX, CR; Sono Co reads US)"
    )

    rad = await api.as_role("company_admin", company_id=companies["rad-co"])
    async with rad.get("/api/cases") as rsp:
        assert [c["id"] for c in (await rsp.json())["items"]] == [cases["CT"]["id"]]
    async with rad.get(f"/api/cases/{cases['US']['id']}") as rsp:
        assert rsp.status == 404  # another company's case
    async with staff.get("/api/cases") as rsp:
        assert len((await rsp.json())["items"]) == 2
    async with staff.get(f"/api/cases/{cases['CT']['id']}") as rsp:
        body = await rsp.json()
    assert body["clinical_history"] == "CT history" and body["question"] == "anything abnormal?"
    other = await api.as_role("practice_staff", practice_id=other_id)
    async with other.post("/api/cases", json={"study_id": studies["CT"].id}) as rsp:
        assert rsp.status == 404  # not their study
    async with staff.get("/api/studies") as rsp:
        assert len((await rsp.json())["items"]) == 3
