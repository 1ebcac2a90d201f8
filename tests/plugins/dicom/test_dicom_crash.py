"""SIGKILL of `vethub run` while storescu sends 300 instances: nothing acknowledged is lost."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from hub.imaging.models import Instance, Study
from hub.testing.dicom import dataset_bytes, storescu_command, write_synthetic_series
from hub.testing.fixtures_dicom import HUB_AE, PRACTICE_AE
from hub.testing.fixtures_env import needs

from .daemon import alive, children, start, stop, upgrade, wait_listening

pytestmark = [
    pytest.mark.slow,
    needs("DCMTK", shutil.which("storescu") is not None, "dcmtk is not installed"),
]


async def test_sigkill_during_storescu_loses_nothing_acknowledged(
    write_config, dicom_config_data, free_port, db_url, tmp_path
):
    data = dicom_config_data(dicom={"port": free_port})
    config = write_config(data)
    upgrade(config, tmp_path)
    series = tmp_path / "series"
    paths = write_synthetic_series(series, 300, rows=128, columns=128)
    root = Path(data["dicom"]["storage_root"])

    hub = start(config, tmp_path)
    try:
        wait_listening(hub, free_port)
        cmd = storescu_command("127.0.0.1", free_port, [series], called_ae=HUB_AE,
                               calling_ae=PRACTICE_AE, extra=["-v"])
        sender = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, env={**os.environ, "TCP_NODELAY": "1"})
        acknowledged: list[Path] = []
        killed = threading.Event()

        def on_success(path: Path) -> None:
            acknowledged.append(path)
            if len(acknowledged) == 120 and not killed.is_set():
                hub.send_signal(signal.SIGKILL)  # mid-series, while storescu keeps sending
                killed.set()

        follow_storescu(sender, on_success)
        sender.wait(timeout=120)
        hub.wait(timeout=30)
        assert killed.is_set() and hub.returncode == -signal.SIGKILL
        assert 120 <= len(acknowledged) < 300

        # Restart: every acknowledged instance is on disk, whole, and in the database.
        hub = start(config, tmp_path)
        wait_listening(hub, free_port)
        engine = create_async_engine(db_url)
        try:
            async with engine.connect() as conn:
                rows = {r.sop_instance_uid: r.path for r in await conn.execute(
                    select(Instance.sop_instance_uid, Instance.path))}
        finally:
            await engine.dispose()
        from hub.testing.dicom import file_meta_of

        for path in acknowledged:
            uid = str(file_meta_of(path)[0].MediaStorageSOPInstanceUID)
            assert uid in rows, f"{path.name} was acknowledged but has no row"
            assert dataset_bytes(root / rows[uid]) == dataset_bytes(path)
        assert not [p for p in root.rglob("*.dcm") if p.stat().st_size == 0]

        # A re-send completes, without duplicates.
        proc = subprocess.run(
            storescu_command("127.0.0.1", free_port, [series], called_ae=HUB_AE,
                             calling_ae=PRACTICE_AE),
            capture_output=True, text=True, timeout=300, env={**os.environ, "TCP_NODELAY": "1"},
        )
        assert proc.returncode == 0, proc.stderr
        engine = create_async_engine(db_url)
        try:
            async with engine.connect() as conn:
                count = await conn.scalar(select(func.count()).select_from(Instance))
                distinct = await conn.scalar(select(func.count(func.distinct(
                    Instance.sop_instance_uid))))
                study_count = await conn.scalar(select(Study.instance_count))
        finally:
            await engine.dispose()
        assert count == distinct == study_count == len(paths) == 300
    finally:
        stop(hub)


async def test_sigkill_with_two_receiver_processes_loses_nothing_acknowledged(
    write_config, dicom_config_data, free_port, db_url, tmp_path
):
    """[dicom] processes = 2 and two storescu at once (associations go round the processes): a
    SIGKILL of the hub mid-send takes its worker with it, and every acknowledged instance,
    from either process, is filed and whole after a restart."""
    data = dicom_config_data(dicom={"port": free_port, "processes": 2})
    config = write_config(data)
    upgrade(config, tmp_path)
    folders = [tmp_path / "a", tmp_path / "b"]
    for folder in folders:
        write_synthetic_series(folder, 100, rows=128, columns=128)
    root = Path(data["dicom"]["storage_root"])
    hub = start(config, tmp_path)
    try:
        wait_listening(hub, free_port)
        workers = children(hub.pid)
        assert len(workers) == 1, "no receiver worker process"
        acknowledged: list[Path] = []
        lock = threading.Lock()

        def on_success(path: Path) -> None:
            with lock:
                acknowledged.append(path)
                if len(acknowledged) == 60:
                    hub.send_signal(signal.SIGKILL)

        senders = [
            subprocess.Popen(
                storescu_command("127.0.0.1", free_port, [folder], called_ae=HUB_AE,
                                 calling_ae=PRACTICE_AE, extra=["-v"]),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                env={**os.environ, "TCP_NODELAY": "1"},
            )
            for folder in folders
        ]
        readers = [threading.Thread(target=follow_storescu, args=(s, on_success)) for s in senders]
        for reader in readers:
            reader.start()
        for sender, reader in zip(senders, readers, strict=True):
            sender.wait(timeout=180)
            reader.join(30)
        hub.wait(timeout=30)
        assert hub.returncode == -signal.SIGKILL and 60 <= len(acknowledged) < 200
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in workers):  # the worker goes with the hub
            assert time.monotonic() < deadline, "the worker outlived the hub"
            time.sleep(0.05)

        hub = start(config, tmp_path)
        wait_listening(hub, free_port)
        engine = create_async_engine(db_url)
        try:
            async with engine.connect() as conn:
                rows = {r.sop_instance_uid: r.path for r in await conn.execute(
                    select(Instance.sop_instance_uid, Instance.path))}
        finally:
            await engine.dispose()
        from hub.testing.dicom import file_meta_of

        for path in acknowledged:
            uid = str(file_meta_of(path)[0].MediaStorageSOPInstanceUID)
            assert uid in rows, f"{path.name} was acknowledged but has no row"
            assert dataset_bytes(root / rows[uid]) == dataset_bytes(path)
    finally:
        stop(hub)


def follow_storescu(sender: subprocess.Popen[str], on_success) -> None:
    """Read ``storescu -v`` output; call ``on_success(path)`` for each file it got Success for."""
    current: Path | None = None
    assert sender.stdout is not None
    for line in sender.stdout:
        if m := re.search(r"Sending file: (\S+)", line):
            current = Path(m.group(1))
        elif "Received Store Response (Success)" in line and current is not None:
            on_success(current)
