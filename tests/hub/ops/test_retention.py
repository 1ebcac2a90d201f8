"""Retention per practice for the images of delivered cases: default keep; a dry run deletes
nothing; the durable job deletes the files (rows kept, marked purged) with an event per batch."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from hub.clock import FrozenClock
from hub.core import Hub
from hub.db.models import Company, HubEvent
from hub.imaging.models import CASE_DELIVERED, CASE_ROUTED, Case, Instance, Study
from hub.ops.backup import verify
from hub.ops.reconcile import reconcile
from hub.ops.retention import JOB_KIND, apply_retention
from hub.testing.dicom import send_files, write_synthetic_series
from hub.testing.fixtures_dicom import HUB_AE, PRACTICE_AE, dicom_port

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


async def receive_study(hub: Hub, folder: Path, count: int) -> int:
    paths = write_synthetic_series(folder, count, rows=8, columns=8)
    results = await asyncio.to_thread(send_files, "127.0.0.1", dicom_port(hub), paths,
                                      called_ae=HUB_AE, calling_ae=PRACTICE_AE)
    assert all(r.status == 0 for r in results)
    async with hub.sessionmaker() as s:
        return (await s.execute(select(Study.id).order_by(Study.id.desc()).limit(1))).scalar_one()


async def add_case(hub: Hub, study_id: int, status: str, delivered_days_ago: float | None,
                   second_opinion: bool = False) -> None:
    async with hub.transaction() as s:
        study = await s.get(Study, study_id)
        company = (await s.execute(select(Company).limit(1))).scalar_one()
        delivered = hub.clock.now() - timedelta(days=delivered_days_ago) if delivered_days_ago is not None else None
        s.add(Case(practice_id=study.practice_id, study_id=study_id, company_id=company.id, status=status,
                   submitted_by="test", delivered_at=delivered, second_opinion=second_opinion))


async def files_of(hub: Hub, study_id: int, root: Path) -> list[bool]:
    async with hub.sessionmaker() as s:
        paths = (await s.execute(select(Instance.path).where(Instance.study_id == study_id))).scalars()
        return [(root / p).exists() for p in paths]


async def test_retention_of_delivered_images(hub_factory, dicom_config_data, tmp_path: Path, db_url: str) -> None:
    clock = FrozenClock()
    hub = await hub_factory(dicom_config_data(operations={"image_retention_days": {"vet-one": 30}}), clock=clock)
    root = tmp_path / "dicom"
    old = await receive_study(hub, tmp_path / "a", 3)
    recent = await receive_study(hub, tmp_path / "b", 2)
    half = await receive_study(hub, tmp_path / "c", 2)
    await add_case(hub, old, CASE_DELIVERED, 40)
    await add_case(hub, recent, CASE_DELIVERED, 5)
    await add_case(hub, half, CASE_DELIVERED, 40)
    # a second opinion on the same study is still on its way (one standing case per study else)
    await add_case(hub, half, CASE_ROUTED, None, second_opinion=True)

    dry = await apply_retention(hub, dry_run=True)
    assert dry.by_practice == {"vet-one": 3}
    assert await files_of(hub, old, root) == [True] * 3

    async with hub.transaction() as s:
        await hub.jobs.enqueue(s, JOB_KIND, {})
    await hub.jobs.run_until_idle()
    assert await files_of(hub, old, root) == [False] * 3
    assert await files_of(hub, recent, root) == [True] * 2
    assert await files_of(hub, half, root) == [True] * 2
    async with hub.sessionmaker() as s:
        purged = (await s.execute(select(Instance.purged_at).where(Instance.study_id == old))).scalars().all()
        [event] = (await s.execute(select(HubEvent).where(HubEvent.kind == "images.retention_deleted"))).scalars()
    assert len(purged) == 3 and all(purged)  # the rows stay
    assert event.data["files"] == 3 and event.practice_id is not None
    # purged rows are neither "missing files" to reconcile nor to verify
    report = await reconcile(hub, dry_run=True, min_age=0)
    assert report.missing == [] and report.orphans == []
    assert (await verify(hub))[1] == []


async def test_default_keeps_everything(hub_factory, dicom_config_data, tmp_path: Path, db_url: str) -> None:
    hub = await hub_factory(dicom_config_data())
    study = await receive_study(hub, tmp_path / "a", 2)
    await add_case(hub, study, CASE_DELIVERED, 4000)
    report = await apply_retention(hub)
    assert report.files == 0
    assert await files_of(hub, study, tmp_path / "dicom") == [True, True]
