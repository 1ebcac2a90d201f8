"""Filing instances in batches: dedupe within and across batches, studies, stability arming."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from hub.db.models import Job, Practice
from hub.imaging.models import Instance, Study
from hub.imaging.service import ImagingError, ReceivedInstance, store_instances


def _item(practice_id: int, sop: str, study: str = "1.2.3", **kw) -> ReceivedInstance:
    return ReceivedInstance(
        practice_id=practice_id, calling_ae="SCANNER1", peer_address="127.0.0.1",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2", sop_instance_uid=sop,
        study_instance_uid=study, series_instance_uid="1.2.3.4",
        transfer_syntax_uid="1.2.840.10008.1.2.1", size_bytes=kw.pop("size", 100),
        path=f"p{practice_id}/{study}/1.2.3.4/{sop}.dcm", modality=kw.pop("modality", "CT"), **kw,
    )


async def _two_practices(hub_factory, dicom_config_data, frozen_clock):
    """A hub with practices vet-one and vet-two on the frozen clock, and their ids."""
    data = dicom_config_data()
    data["practices"].append({"slug": "vet-two", "name": "Vet Two"})
    hub = await hub_factory(data, clock=frozen_clock)
    async with hub.sessionmaker() as s:
        one = await s.scalar(select(Practice.id).where(Practice.slug == "vet-one"))
        two = await s.scalar(select(Practice.id).where(Practice.slug == "vet-two"))
    return hub, one, two


async def test_batch_dedupes_and_files_studies(hub_factory, dicom_config_data, frozen_clock):
    hub, one, two = await _two_practices(hub_factory, dicom_config_data, frozen_clock)
    async with hub.transaction() as s:
        outcomes = await store_instances(s, hub, [
            _item(one, "1.1"), _item(one, "1.1", size=120), _item(one, "2.1", study="2.2",
                                                                   modality="US"),
        ], stable_age=30)
    assert [o.created for o in outcomes] == [True, False, True]
    assert outcomes[0].instance_id == outcomes[1].instance_id
    async with hub.sessionmaker() as s:
        studies = {st.study_instance_uid: st for st in (await s.execute(select(Study))).scalars()}
        inst = (await s.execute(select(Instance).where(Instance.sop_instance_uid == "1.1"))).scalar_one()
        jobs = (await s.execute(select(Job).where(Job.kind == "imaging.study_stability"))).scalars().all()
    assert studies["1.2.3"].instance_count == 1 and studies["2.2"].modalities == ["US"]
    assert inst.received_count == 2 and inst.size_bytes == 100  # first copy kept
    assert len(jobs) == 2  # one armed check per study

    async with hub.transaction() as s:  # a later batch re-arms nothing, files into the study
        (again,) = await store_instances(s, hub, [_item(one, "1.2")], stable_age=30)
    assert again.created and again.study_id == outcomes[0].study_id

    with pytest.raises(ImagingError, match="another practice"):
        async with hub.transaction() as s:
            await store_instances(s, hub, [_item(two, "1.1")], stable_age=30)


async def test_overwrite_replaces_header_fields(hub_factory, dicom_config_data):
    hub = await hub_factory(dicom_config_data())
    async with hub.sessionmaker() as s:
        one = await s.scalar(select(Practice.id).where(Practice.slug == "vet-one"))
    async with hub.transaction() as s:
        await store_instances(s, hub, [_item(one, "1.1", animal_name="Rex")], stable_age=30)
    async with hub.transaction() as s:
        await store_instances(s, hub, [_item(one, "1.1", animal_name="Max", size=150)],
                              stable_age=30, overwrite=True)
    async with hub.sessionmaker() as s:
        inst = (await s.execute(select(Instance))).scalar_one()
        study = (await s.execute(select(Study))).scalar_one()
    assert (inst.animal_name, inst.size_bytes, inst.received_count) == ("Max", 150, 2)
    assert study.size_bytes == 150 and study.instance_count == 1


async def test_new_studies_of_several_practices_in_one_batch(hub_factory, dicom_config_data):
    """Many practices at once: one batch opens a study for each, each with the header of its
    first instance in the batch, its own counts and modalities, and one armed check each."""
    data = dicom_config_data()
    data["practices"].append({"slug": "vet-two", "name": "Vet Two"})
    hub = await hub_factory(data)
    async with hub.sessionmaker() as s:
        one = await s.scalar(select(Practice.id).where(Practice.slug == "vet-one"))
        two = await s.scalar(select(Practice.id).where(Practice.slug == "vet-two"))
    batch = [
        _item(one, "1.1", study="9.1", animal_name="Rex"),
        _item(two, "2.1", study="9.2", animal_name="Tom", modality="MR"),
        _item(one, "1.2", study="9.1", animal_name="ignored", modality="SR"),
        _item(two, "2.2", study="9.1", animal_name="Kit", modality="US"),  # its own study
        _item(two, "2.3", study="9.2", size=300, modality="MR"),
    ]
    async with hub.transaction() as s:
        outcomes = await store_instances(s, hub, batch, stable_age=30)
    async with hub.sessionmaker() as s:
        studies = {
            (st.practice_id, st.study_instance_uid): st
            for st in (await s.execute(select(Study))).scalars()
        }
        jobs = (await s.execute(select(Job).where(Job.kind == "imaging.study_stability"))).scalars().all()
    got = {key: (st.animal_name, st.instance_count, st.size_bytes, st.modalities)
           for key, st in studies.items()}
    assert got == {
        (one, "9.1"): ("Rex", 2, 200, ["CT", "SR"]),
        (two, "9.2"): ("Tom", 2, 400, ["MR"]),
        (two, "9.1"): ("Kit", 1, 100, ["US"]),
    }
    assert [o.study_id for o in outcomes] == [
        studies[(one, "9.1")].id, studies[(two, "9.2")].id, studies[(one, "9.1")].id,
        studies[(two, "9.1")].id, studies[(two, "9.2")].id,
    ]
    assert sorted(j.payload["study_id"] for j in jobs) == sorted(st.id for st in studies.values())


async def test_a_batch_over_known_new_and_resent_studies(hub_factory, dicom_config_data, frozen_clock):
    """One batch touching several studies (one statement updates them all): a study growing
    keeps its armed check and gains a modality, a stable one re-opens with a new check, a new
    one opens, and a study only re-sent to keeps its count and check."""
    hub, one, two = await _two_practices(hub_factory, dicom_config_data, frozen_clock)
    async with hub.transaction() as s:
        await store_instances(s, hub, [
            _item(one, "1.1", study="8.1"), _item(one, "2.1", study="8.2"),
            _item(one, "4.1", study="8.4", size=50),
        ], stable_age=30)
    first_due = {st.study_instance_uid: st.stable_check_at for st in await _studies(hub)}
    async with hub.transaction() as s:  # 8.2 was found stable: its check ran and is gone
        await s.execute(update(Study).where(Study.study_instance_uid == "8.2")
                        .values(status="stable", stable_at=frozen_clock.now(), stable_check_at=None))
    frozen_clock.advance(seconds=10)
    async with hub.transaction() as s:
        outcomes = await store_instances(s, hub, [
            _item(one, "1.2", study="8.1", modality="MR", size=70),
            _item(one, "2.2", study="8.2", size=30),
            _item(two, "3.1", study="8.3", modality="US"),
            _item(one, "4.1", study="8.4", size=50),  # re-sent
        ], stable_age=30)
    assert [o.created for o in outcomes] == [True, True, True, False]
    studies = {st.study_instance_uid: st for st in await _studies(hub)}
    got = {uid: (st.instance_count, st.size_bytes, st.modalities, st.status)
           for uid, st in studies.items()}
    assert got == {
        "8.1": (2, 170, ["CT", "MR"], "receiving"),
        "8.2": (2, 130, ["CT"], "receiving"),
        "8.3": (1, 100, ["US"], "receiving"),
        "8.4": (1, 50, ["CT"], "receiving"),
    }
    assert studies["8.1"].stable_check_at == first_due["8.1"]  # kept, not re-armed
    assert studies["8.4"].stable_check_at == first_due["8.4"]
    assert studies["8.2"].stable_at is None and studies["8.2"].stable_check_at == (
        frozen_clock.now() + timedelta(seconds=30))
    async with hub.sessionmaker() as s:
        jobs = (await s.execute(select(Job).where(Job.kind == "imaging.study_stability"))).scalars().all()
    armed = sorted((j.payload["study_id"], j.run_at) for j in jobs)
    assert armed == sorted([
        *((studies[uid].id, first_due[uid]) for uid in ("8.1", "8.2", "8.4")),
        (studies["8.2"].id, studies["8.2"].stable_check_at),
        (studies["8.3"].id, studies["8.3"].stable_check_at),
    ])


async def _studies(hub) -> list[Study]:
    async with hub.sessionmaker() as s:
        return list((await s.execute(select(Study))).scalars())
