"""Files in the image store without a row are quarantined (never deleted) and rows without a
file are listed — at start-up and by ``vethub dicom reconcile`` — each reported as an event."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from hub.core import Hub
from hub.db.models import HubEvent
from hub.imaging.models import Instance
from hub.ops.reconcile import reconcile
from hub.testing.dicom import send_files, write_synthetic_series
from hub.testing.fixtures_core import dump_toml
from hub.testing.fixtures_dicom import HUB_AE, PRACTICE_AE, dicom_port

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


async def events_of(hub: Hub, kind: str) -> list[HubEvent]:
    async with hub.sessionmaker() as s:
        return list((await s.execute(select(HubEvent).where(HubEvent.kind == kind).order_by(HubEvent.id))).scalars())


def make_orphan(root: Path, model: Path, sop: str) -> Path:
    """A complete file at an instance's place with no row (a crash between fsync and commit)."""
    target = root / model.relative_to(root).parent / f"{sop}.dcm"
    shutil.copy(model, target)
    old = time.time() - 3600
    os.utime(target, (old, old))
    return target


async def test_reconcile_quarantines_orphans_and_lists_missing_files(
        hub_factory, dicom_config_data, tmp_path: Path, db_url: str) -> None:
    data = dicom_config_data()
    hub = await hub_factory(data)
    paths = write_synthetic_series(tmp_path / "s", 3, rows=8, columns=8)
    results = await asyncio.to_thread(send_files, "127.0.0.1", dicom_port(hub), paths,
                                      called_ae=HUB_AE, calling_ae=PRACTICE_AE)
    assert [r.status for r in results] == [0, 0, 0]
    root = tmp_path / "dicom"
    async with hub.sessionmaker() as s:
        rows = list((await s.execute(select(Instance).order_by(Instance.id))).scalars())
    orphan = make_orphan(root, root / rows[0].path, "1.2.826.0.1.999.1")
    fresh = root / rows[0].path
    fresh = fresh.parent / "1.2.826.0.1.999.2.dcm"
    shutil.copy(orphan, fresh)  # a file written just now: its row may be on its way
    (root / rows[1].path).unlink()  # a row whose file is gone

    report = await reconcile(hub, dry_run=True)
    assert report.orphans == [orphan.relative_to(root).as_posix()]
    assert report.missing == [(rows[1].id, rows[1].path)]
    assert orphan.exists() and not await events_of(hub, "dicom.orphan_files")  # dry run: nothing

    config = tmp_path / "vethub.toml"
    config.write_text(dump_toml(data | {"database": {"url": db_url},
                                        "hub": {"data_dir": str(hub.data_dir), "secret_key": "k" * 16}}))
    proc = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "hub.cli", "dicom", "reconcile",
                                                    "--config", str(config)],
                                   capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr  # a row without a file is worth a non-zero exit
    assert f"no file: instance {rows[1].id}" in proc.stdout and "quarantined 1 file(s)" in proc.stdout
    assert not orphan.exists() and fresh.exists()
    [moved] = list((root / "quarantine").rglob("*.dcm"))
    assert moved.name == orphan.name and moved.read_bytes() == (root / rows[0].path).read_bytes()
    [orphans] = await events_of(hub, "dicom.orphan_files")
    assert orphans.data["paths"] == [orphan.relative_to(root).as_posix()]
    [missing] = await events_of(hub, "dicom.missing_files")
    assert missing.data["instances"] == [{"id": rows[1].id, "path": rows[1].path}]

    # At start-up too: another orphan, a hub started on the same store.
    make_orphan(root, root / rows[2].path, "1.2.826.0.1.999.3")
    await hub.stop()
    hub2 = await hub_factory(config=hub.config)
    deadline = time.monotonic() + 30
    while len(await events_of(hub2, "dicom.orphan_files")) < 2:
        assert time.monotonic() < deadline, "start-up did not reconcile"
        await asyncio.sleep(0.1)
    assert len(list((root / "quarantine").rglob("*.dcm"))) == 2
