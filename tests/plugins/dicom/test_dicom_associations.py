"""Who may call: unknown calling AE and wrong called AE are rejected, with the reason, as events."""

from __future__ import annotations

import asyncio
import shutil
import time

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification
from sqlalchemy import select

from hub.db.models import CallingAE, HubEvent, Practice
from hub.imaging.models import Instance
from hub.testing.dicom import echoscu, send_files, write_synthetic_series
from hub.testing.fixtures_dicom import HUB_AE, PRACTICE_AE, dicom_port
from hub.testing.fixtures_env import needs

needs_dcmtk = needs("DCMTK", shutil.which("echoscu") is not None, "dcmtk is not installed")


def _associate(port: int, *, calling: str, called: str):
    """(result, source, diagnostic) of the A-ASSOCIATE-RJ, or None when accepted."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    try:
        if assoc.is_established:
            return None
        assert assoc.is_rejected, "expected an A-ASSOCIATE-RJ, not an abort"
        rj = assoc.acceptor.primitive
        return (rj.result, rj.result_source, rj.diagnostic)
    finally:
        if assoc.is_established:
            assoc.release()


async def _events(hub):
    async with hub.sessionmaker() as s:
        rows = await s.execute(
            select(HubEvent).where(HubEvent.kind == "dicom.association_rejected")
        )
        return list(rows.scalars())


@pytest.fixture(params=["hub", "pynetdicom"])
async def engine_hub(request, hub_factory, dicom_config_data):
    return await hub_factory(dicom_config_data(dicom={"engine": request.param}))


async def test_unknown_calling_ae_is_rejected_and_listed(engine_hub):
    dicom_hub = engine_hub
    rj = await asyncio.to_thread(
        _associate, dicom_port(dicom_hub), calling="SCANNER2", called=HUB_AE
    )
    assert rj == (0x01, 0x01, 0x03)  # permanent, service user, calling AE not recognised
    (event,) = await _events(dicom_hub)
    assert event.message == "rejected: calling AE SCANNER2 not registered, from 127.0.0.1"
    assert event.data["reason"] == "calling_ae"


async def test_wrong_called_ae_is_rejected_and_listed(engine_hub):
    dicom_hub = engine_hub
    rj = await asyncio.to_thread(
        _associate, dicom_port(dicom_hub), calling=PRACTICE_AE, called="NOTTHEHUB"
    )
    assert rj == (0x01, 0x01, 0x07)  # permanent, service user, called AE not recognised
    (event,) = await _events(dicom_hub)
    assert "called AE NOTTHEHUB is not this hub's (VETHUB)" in event.message
    assert event.data == {
        "calling_ae": PRACTICE_AE, "called_ae": "NOTTHEHUB", "address": "127.0.0.1",
        "reason": "called_ae",
    }


async def test_rejections_are_listed_in_the_events_api(dicom_hub, dicom_api):
    await asyncio.to_thread(_associate, dicom_port(dicom_hub), calling="SCANNER2", called=HUB_AE)
    await asyncio.to_thread(_associate, dicom_port(dicom_hub), calling=PRACTICE_AE, called="X")
    operator = await dicom_api.as_role("operator")
    async with operator.get("/api/events") as rsp:
        assert rsp.status == 200
        body = await rsp.json()
    messages = [e["message"] for e in body["items"]]
    assert "rejected: calling AE SCANNER2 not registered, from 127.0.0.1" in messages
    assert any("called AE X is not this hub's" in m for m in messages)


@needs_dcmtk
async def test_dcmtk_sees_the_rejection_reason(engine_hub):
    dicom_hub = engine_hub
    proc = await asyncio.to_thread(
        echoscu, "127.0.0.1", dicom_port(dicom_hub), called_ae=HUB_AE, calling_ae="SCANNER2"
    )
    assert proc.returncode != 0
    assert "Calling AE Title Not Recognized" in proc.stderr, proc.stderr


async def test_source_address_restriction(dicom_hub, tmp_path):
    async with dicom_hub.transaction() as s:
        ae = (await s.execute(select(CallingAE).where(CallingAE.ae_title == PRACTICE_AE))).scalar_one()
        ae.source_addresses = ["10.0.0.5"]
    rj = await asyncio.to_thread(
        _associate, dicom_port(dicom_hub), calling=PRACTICE_AE, called=HUB_AE
    )
    assert rj == (0x01, 0x01, 0x03)
    (event,) = await _events(dicom_hub)
    assert event.message == (
        f"rejected: calling AE {PRACTICE_AE} not allowed from 127.0.0.1 (registered for 10.0.0.5)"
    )
    async with dicom_hub.transaction() as s:
        ae = (await s.execute(select(CallingAE).where(CallingAE.ae_title == PRACTICE_AE))).scalar_one()
        ae.source_addresses = ["127.0.0.1"]
    assert await asyncio.to_thread(
        _associate, dicom_port(dicom_hub), calling=PRACTICE_AE, called=HUB_AE
    ) is None


async def test_unknown_callers_filed_under_a_practice_when_allowed(
    hub_factory, dicom_config_data, tmp_path
):
    hub = await hub_factory(dicom_config_data(
        dicom={"refuse_unknown_callers": False, "unknown_caller_practice": "vet-one"}
    ))
    paths = write_synthetic_series(tmp_path / "s", 2)
    results = await asyncio.to_thread(
        send_files, "127.0.0.1", dicom_port(hub), paths, called_ae=HUB_AE, calling_ae="STRANGER"
    )
    assert [r.status for r in results] == [0, 0]
    async with hub.sessionmaker() as s:
        practice_id = await s.scalar(select(Practice.id).where(Practice.slug == "vet-one"))
        rows = list((await s.execute(select(Instance))).scalars())
    assert {(r.practice_id, r.calling_ae) for r in rows} == {(practice_id, "STRANGER")}
    assert await _events(hub) == []


async def test_too_many_associations_rejected_transiently(hub_factory, dicom_config_data):
    hub = await hub_factory(dicom_config_data(dicom={"max_associations": 1}))
    port = dicom_port(hub)
    ae = AE(ae_title=PRACTICE_AE)
    ae.add_requested_context(Verification)
    first = await asyncio.to_thread(ae.associate, "127.0.0.1", port, ae_title=HUB_AE)
    try:
        assert first.is_established
        rj = await asyncio.to_thread(_associate, port, calling=PRACTICE_AE, called=HUB_AE)
        assert rj == (0x02, 0x03, 0x02)  # transient, provider (presentation), limit exceeded
    finally:
        await asyncio.to_thread(first.release)
    deadline = time.monotonic() + 30  # the slot frees once the hub has seen the first one close
    while (rj := await asyncio.to_thread(
        _associate, port, calling=PRACTICE_AE, called=HUB_AE
    )) is not None and time.monotonic() < deadline:
        assert rj == (0x02, 0x03, 0x02)
    assert rj is None
