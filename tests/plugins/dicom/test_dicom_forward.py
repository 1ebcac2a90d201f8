"""Forwarding a case to a real SCP that is down, then refuses one instance, then accepts."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from hub.db.models import Job, Practice
from hub.imaging.models import Case, CaseInstanceForward, Instance, Study
from hub.testing.dicom import file_meta_of, send_files, write_synthetic_series
from hub.testing.fixtures_dicom import HUB_AE, PRACTICE_AE, dicom_port


async def _setup(hub_factory, dicom_config_data, clock, peer, tmp_path, **jobs):
    data = dicom_config_data(dicom={"stable_age": 86400})  # keep the stability job out of it
    data["companies"][0]["destination"] = {
        "host": "127.0.0.1", "port": peer.port, "ae_title": peer.ae_title
    }
    if jobs:
        data["jobs"] = jobs
    hub = await hub_factory(data, clock=clock)
    paths = write_synthetic_series(tmp_path / "s", 3, modality="DX")
    results = await asyncio.to_thread(
        send_files, "127.0.0.1", dicom_port(hub), paths, called_ae=HUB_AE, calling_ae=PRACTICE_AE
    )
    assert {r.status for r in results} == {0}
    return hub, [str(file_meta_of(p)[0].MediaStorageSOPInstanceUID) for p in paths]


async def _submit(hub, api_for) -> int:
    api = await api_for(hub)
    async with hub.sessionmaker() as s:
        practice_id = await s.scalar(select(Practice.id).where(Practice.slug == "vet-one"))
        study_id = await s.scalar(select(Study.id))
    staff = await api.as_role("practice_staff", practice_id=practice_id)
    async with staff.post("/api/cases", json={"study_id": study_id, "question": "fracture?",
                                                 "allow_incomplete": True}) as r:
        assert r.status == 201, await r.text()
        return (await r.json())["id"]


async def _forwards(hub, case_id) -> dict[str, tuple[str, int | None, int]]:
    async with hub.sessionmaker() as s:
        rows = await s.execute(
            select(Instance.sop_instance_uid, CaseInstanceForward)
            .join(CaseInstanceForward, CaseInstanceForward.instance_id == Instance.id)
            .where(CaseInstanceForward.case_id == case_id)
        )
        return {uid: (f.status, f.status_code, f.attempts) for uid, f in rows}


async def _case(hub, case_id) -> Case:
    async with hub.sessionmaker() as s:
        return await s.get(Case, case_id)


async def test_forward_down_then_one_refused_then_accepted(
    hub_factory, dicom_config_data, frozen_clock, dicom_peer, api_for, tmp_path
):
    dicom_peer.down()
    hub, uids = await _setup(hub_factory, dicom_config_data, frozen_clock, dicom_peer, tmp_path)
    case_id = await _submit(hub, api_for)

    # 1. The peer is down: the attempt fails, nothing is marked sent, the job will retry.
    # (The other two jobs announce the case's first two statuses.)
    assert await hub.jobs.run_until_idle() == 3
    case = await _case(hub, case_id)
    assert case.status == "routed"
    async with hub.sessionmaker() as s:
        (job,) = (await s.execute(select(Job).where(Job.kind == "dicom.forward_case"))).scalars()
    assert "could not associate" in job.last_error
    assert set((await _forwards(hub, case_id)).values()) == {("pending", None, 0)}

    # 2. Up, but it refuses the second instance (out of resources).
    dicom_peer.accept()
    dicom_peer.fail_instances[uids[1]] = 0xA700
    frozen_clock.advance(seconds=600)
    assert await hub.jobs.run_until_idle() == 1
    assert await _forwards(hub, case_id) == {
        uids[0]: ("success", 0, 1), uids[1]: ("failed", 0xA700, 1), uids[2]: ("success", 0, 1),
    }
    assert (await _case(hub, case_id)).status == "routed"  # never delivered on a refusal

    # 3. It accepts the last one with a warning: delivered, the warning recorded as such.
    dicom_peer.fail_instances.clear()
    dicom_peer.warn_instances[uids[1]] = 0xB000
    frozen_clock.advance(seconds=600)
    assert await hub.jobs.run_until_idle() == 2  # the forward, and the "delivered" event
    assert await _forwards(hub, case_id) == {
        uids[0]: ("success", 0, 1), uids[1]: ("warning", 0xB000, 2), uids[2]: ("success", 0, 1),
    }
    case = await _case(hub, case_id)
    assert case.status == "delivered" and case.delivered_at is not None
    images = [u for u in dicom_peer.received_uids() if u in uids]  # the rest: the request SR
    assert sorted(images) == sorted(uids)  # each sent once it was accepted

    api = await api_for(hub)
    operator = await api.as_role("operator")
    async with operator.get(f"/api/cases/{case_id}") as rsp:
        body = await rsp.json()
    history = [(h["status"], h["note"]) for h in body["status_history"]]
    assert [s for s, _ in history] == ["submitted", "routed", "delivered"]
    assert "2 success, 1 warning" in history[2][1]
    assert {i["status_code"] for i in body["instances"]} == {"0x0000", "0xB000"}
    async with hub.sessionmaker() as s:
        (job,) = (await s.execute(select(Job).where(Job.kind == "dicom.forward_case"))).scalars()
    assert job.status == "succeeded" and job.attempts == 3


async def test_forward_dead_letter_marks_case_failed(
    hub_factory, dicom_config_data, frozen_clock, dicom_peer, api_for, tmp_path
):
    dicom_peer.refuse()
    hub, _uids = await _setup(
        hub_factory, dicom_config_data, frozen_clock, dicom_peer, tmp_path,
        max_attempts=3, backoff_initial=1, backoff_max=1,
    )
    case_id = await _submit(hub, api_for)
    for _ in range(3):
        await hub.jobs.run_until_idle()
        frozen_clock.advance(seconds=60)
    assert dicom_peer.rejected_associations == 3
    case = await _case(hub, case_id)
    assert case.status == "failed"
    async with hub.sessionmaker() as s:
        (job,) = (await s.execute(select(Job).where(Job.kind == "dicom.forward_case"))).scalars()
    assert job.status == "dead" and "association rejected" in job.last_error


async def test_without_destination_the_case_is_delivered_in_the_hub(
    hub_factory, dicom_config_data, frozen_clock, api_for, tmp_path
):
    """A company with no DICOM destination gets its cases in the hub: no forward job."""
    hub = await hub_factory(dicom_config_data(), clock=frozen_clock)
    paths = write_synthetic_series(tmp_path / "s", 1, modality="CT")
    await asyncio.to_thread(
        send_files, "127.0.0.1", dicom_port(hub), paths, called_ae=HUB_AE, calling_ae=PRACTICE_AE
    )
    case_id = await _submit(hub, api_for)
    await hub.jobs.run_until_idle()
    case = await _case(hub, case_id)
    assert case.status == "delivered" and case.delivery == "hub"
    async with hub.sessionmaker() as s:
        assert (await s.execute(select(Job).where(Job.kind == "dicom.forward_case"))).scalars().all() == []
