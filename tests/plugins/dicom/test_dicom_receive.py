"""The receiver against real SCUs: dcmtk's echoscu and storescu, and pynetdicom."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import func, select

from hub.db.models import HubEvent, Practice
from hub.imaging.models import Instance, Study
from hub.testing.dicom import (
    dataset_bytes,
    echoscu,
    file_meta_of,
    send_files,
    storescu,
    write_synthetic_series,
)
from hub.testing.fixtures_dicom import HUB_AE, PRACTICE_AE, dicom_port
from hub.testing.fixtures_env import needs
from plugins.dicom.plugin import receiver_of
from plugins.dicom.storage import is_valid_uid

needs_dcmtk = needs("DCMTK", shutil.which("storescu") is not None, "dcmtk is not installed")


async def _rows(hub, model):
    async with hub.sessionmaker() as s:
        return list((await s.execute(select(model).order_by(model.id))).scalars())


def _stored_dataset(hub, instance: Instance) -> bytes:
    return dataset_bytes(receiver_of(hub).store.root / instance.path)


@needs_dcmtk
async def test_echoscu_gets_an_echo(dicom_hub):
    proc = await asyncio.to_thread(
        echoscu, "127.0.0.1", dicom_port(dicom_hub), called_ae=HUB_AE, calling_ae=PRACTICE_AE
    )
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(params=["hub", "pynetdicom"])
async def engine_hub(request, hub_factory, dicom_config_data):
    """A hub whose receiver runs on each engine: the hub's own upper layer and pynetdicom's."""
    return await hub_factory(dicom_config_data(dicom={"engine": request.param}))


@needs_dcmtk
async def test_echoscu_gets_an_echo_on_both_engines(engine_hub):
    proc = await asyncio.to_thread(
        echoscu, "127.0.0.1", dicom_port(engine_hub), called_ae=HUB_AE, calling_ae=PRACTICE_AE
    )
    assert proc.returncode == 0, proc.stderr


@needs_dcmtk
async def test_storescu_series_is_stored_with_header_fields(engine_hub, tmp_path):
    dicom_hub = engine_hub
    paths = write_synthetic_series(
        tmp_path / "series", 5, modality="CT", animal_name="Biscuit", animal_id="P-77",
        species="Feline", responsible_person="Doe^John",
    )
    proc = await asyncio.to_thread(
        storescu, "127.0.0.1", dicom_port(dicom_hub), [tmp_path / "series"],
        called_ae=HUB_AE, calling_ae=PRACTICE_AE, extra=["-v"],
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    instances = await _rows(dicom_hub, Instance)
    assert len(instances) == 5
    async with dicom_hub.sessionmaker() as s:
        practice_id = await s.scalar(select(Practice.id).where(Practice.slug == "vet-one"))
    first = instances[0]
    assert first.practice_id == practice_id
    assert first.calling_ae == PRACTICE_AE
    assert first.peer_address == "127.0.0.1"
    assert first.modality == "CT"
    assert first.animal_name == "Biscuit"
    assert first.animal_id == "P-77"
    assert first.species == "Feline"
    assert first.responsible_person == "Doe^John"
    assert first.body_part == "THORAX"
    assert first.study_date == "20261120"
    assert first.study_description == "CT synthetic study"
    assert first.institution == "Testville Veterinary Clinic"
    assert first.size_bytes > 16 * 16 * 2
    by_uid = {i.sop_instance_uid: i for i in instances}
    for path in paths:
        uid = str(file_meta_of(path)[0].MediaStorageSOPInstanceUID)
        assert _stored_dataset(dicom_hub, by_uid[uid]) == dataset_bytes(path)
    (study,) = await _rows(dicom_hub, Study)
    assert study.instance_count == 5 and study.modalities == ["CT"]
    assert study.status == "receiving" and study.stable_check_at is not None


@pytest.mark.parametrize("engine", ["hub", "pynetdicom"])
async def test_every_pydicom_sample_arrives_byte_identical(
    hub_factory, dicom_config_data, dicom_samples, engine
):
    """Every bundled sample with a storage SOP class: stored as sent, compressed ones too.

    Several samples share a SOP Instance UID (one image in several encodings), so they go in
    rounds of distinct UIDs to a hub that overwrites re-sent instances, each round checked.
    """
    hub = await hub_factory(dicom_config_data(dicom={"overwrite_resent": True, "engine": engine}))
    assert len(dicom_samples) > 40
    rounds: list[list[Path]] = []
    for path in dicom_samples:
        uid = str(file_meta_of(path)[0].MediaStorageSOPInstanceUID)
        for batch in rounds:
            if all(str(file_meta_of(p)[0].MediaStorageSOPInstanceUID) != uid for p in batch):
                batch.append(path)
                break
        else:
            rounds.append([path])
    stored, refused, transfer_syntaxes = set(), set(), set()
    for batch in rounds:
        results = await asyncio.to_thread(
            send_files, "127.0.0.1", dicom_port(hub), batch,
            called_ae=HUB_AE, calling_ae=PRACTICE_AE,
        )
        instances = {i.sop_instance_uid: i for i in await _rows(hub, Instance)}
        for result in results:
            assert result.status is not None, (result.path.name, result.error)
            if result.status == 0x0000:
                row = instances[result.sop_instance_uid]
                assert _stored_dataset(hub, row) == dataset_bytes(result.path), result.path.name
                stored.add(result.path.name)
                transfer_syntaxes.add(row.transfer_syntax_uid)
            else:
                # Only samples lacking a Study/Series UID may be refused, and with 0xA900.
                assert result.status == 0xA900, (result.path.name, hex(result.status))
                refused.add(result.path.name)
    # Refused exactly the samples whose data set lacks a Study/Series UID or contradicts the
    # request (its SOP Instance UID differs from the file meta's, which the SCU sends), as
    # dcmtk's storescp refuses them (0xA900).
    assert refused == {p.name for p in dicom_samples if _inconsistent(p)}
    assert len(stored) >= 50
    # compressed ones included: JPEG baseline, JPEG-LS, JPEG 2000, RLE, deflate, big endian
    for ts in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90",
               "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"):
        assert ts in transfer_syntaxes, ts


def _inconsistent(path: Path) -> bool:
    ds = dcmread(path, stop_before_pixels=True, force=True)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        if not is_valid_uid(str(ds.get(keyword, ""))):
            return True
    meta = ds.file_meta
    return (ds.SOPInstanceUID, ds.SOPClassUID) != (
        meta.MediaStorageSOPInstanceUID, meta.MediaStorageSOPClassUID
    )


async def test_resent_instances_make_no_duplicates(dicom_hub, tmp_path):
    paths = write_synthetic_series(tmp_path / "s", 3)
    port = dicom_port(dicom_hub)
    for _ in range(2):
        results = await asyncio.to_thread(
            send_files, "127.0.0.1", port, paths, called_ae=HUB_AE, calling_ae=PRACTICE_AE
        )
        assert [r.status for r in results] == [0, 0, 0]
    instances = await _rows(dicom_hub, Instance)
    assert len(instances) == 3 and {i.received_count for i in instances} == {2}
    (study,) = await _rows(dicom_hub, Study)
    assert study.instance_count == 3


async def test_parallel_associations_share_commits(engine_hub, tmp_path):
    dicom_hub = engine_hub
    paths = write_synthetic_series(tmp_path / "s", 40)
    results = await asyncio.to_thread(
        send_files, "127.0.0.1", dicom_port(dicom_hub), paths,
        called_ae=HUB_AE, calling_ae=PRACTICE_AE, associations=4,
    )
    assert {r.status for r in results} == {0}
    async with dicom_hub.sessionmaker() as s:
        assert await s.scalar(select(func.count()).select_from(Instance)) == 40
        (study,) = (await s.execute(select(Study))).scalars()
        assert study.instance_count == 40
        assert await s.scalar(select(func.count()).select_from(HubEvent)) == 0
