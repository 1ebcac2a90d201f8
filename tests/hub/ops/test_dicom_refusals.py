"""Every DICOM refusal leaves a trace: a log line, a count in
``vethub_dicom_refusals_total{status, reason}`` and an operator event; below the storage
watermark the receiver refuses new associations (transiently) before the disk is full."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from hub.core import Hub
from hub.db.models import HubEvent
from hub.ops.refusals import classify
from hub.testing.dicom import send_files, write_synthetic_series
from hub.testing.fixtures_dicom import HUB_AE, PRACTICE_AE, dicom_port


def refusals(status: str, reason: str) -> float:
    return REGISTRY.get_sample_value("vethub_dicom_refusals_total", {"status": status, "reason": reason}) or 0.0


async def events_of(hub: Hub, kind: str, deadline_s: float = 10) -> list[HubEvent]:
    deadline = time.monotonic() + deadline_s
    while True:
        async with hub.sessionmaker() as s:
            rows = list((await s.execute(select(HubEvent).where(HubEvent.kind == kind))).scalars())
        if rows or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.05)


@pytest.mark.parametrize(("status", "comment", "reason"), [
    (0xA700, "cannot store 1.2.3.dcm: No space left on device", "disk"),
    (0xA700, "storage below the watermark: 1.0 MiB free", "disk_low"),
    (0xA700, "cannot store 1.2.3.dcm: Input/output error", "io"),
    (0xA700, "database unavailable: OperationalError", "database"),
    (0xA900, "this SOP Instance UID is already stored for another practice", "duplicate_other_practice"),
    (0xA900, "SOP Instance UID does not match the command", "bad_dataset"),
    (0xC000, "cannot parse the data set", "bad_dataset"),
    (0x0124, "calling AE not identified", "not_authorised"),
])
def test_refusal_reasons(status: int, comment: str, reason: str) -> None:
    assert classify(status, comment) == reason


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_below_the_watermark_associations_are_refused(hub_factory, dicom_config_data, tmp_path, db_url) -> None:
    hub = await hub_factory(dicom_config_data(operations={"min_free_bytes": 2**62}))
    before = refusals("A-ASSOCIATE-RJ", "disk_low")
    paths = write_synthetic_series(tmp_path / "s", 2, rows=8, columns=8)
    results = await asyncio.to_thread(send_files, "127.0.0.1", dicom_port(hub), paths,
                                      called_ae=HUB_AE, calling_ae=PRACTICE_AE)
    assert [r.error for r in results] == ["rejected", "rejected"]
    assert not [p for p in (tmp_path / "dicom").rglob("*") if p.is_file()]
    assert refusals("A-ASSOCIATE-RJ", "disk_low") == before + 1
    [rejected] = await events_of(hub, "dicom.association_rejected")
    assert "watermark" in rejected.message and "min_free_bytes" in rejected.message
    [refused] = await events_of(hub, "dicom.instance_refused")
    assert refused.data["reason"] == "disk_low"


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_disk_full_refusals_are_logged_counted_and_listed(
        hub_factory, dicom_config_data, small_tmpfs, tmp_path, db_url, caplog) -> None:
    """No watermark (0): the disk fills; every 0xA700 is counted with reason ``disk``, one event."""
    hub = await hub_factory(dicom_config_data(dicom={"storage_root": str(small_tmpfs / "dicom")},
                                              operations={"min_free_bytes": 0}))
    before = refusals("0xA700", "disk")
    paths = write_synthetic_series(tmp_path / "s", 60, rows=64, columns=64)
    results = await asyncio.to_thread(send_files, "127.0.0.1", dicom_port(hub), paths,
                                      called_ae=HUB_AE, calling_ae=PRACTICE_AE)
    full = [r for r in results if r.status == 0xA700]
    assert full
    assert refusals("0xA700", "disk") == before + len(full)
    [event] = await events_of(hub, "dicom.instance_refused")  # one per reason per minute
    assert event.data["reason"] == "disk" and event.practice_id is not None
    assert sum("C-STORE refused (0xA700, disk)" in r.getMessage() for r in caplog.records) == len(full)
