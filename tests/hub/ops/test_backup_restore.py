"""`vethub backup` of a hub while it receives images, `vethub restore` of it elsewhere, and
`vethub verify`: the restored hub has a consistent subset of the rows, each with its file."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from hub.imaging.models import Instance
from hub.testing.dicom import send_files, write_synthetic_series
from hub.testing.fixtures_core import dump_toml
from hub.testing.fixtures_dicom import HUB_AE, PRACTICE_AE, dicom_port

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]


def vethub(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hub.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def config_file(path: Path, data: dict[str, Any], db: Path, data_dir: Path, storage: Path) -> Path:
    path.write_text(dump_toml({**data, "database": {"url": f"sqlite+aiosqlite:///{db}"},
                               "hub": {"data_dir": str(data_dir), "secret_key": "s" * 16},
                               "dicom": {**data["dicom"], "storage_root": str(storage)}}))
    return path


async def test_backup_under_ingest_restores_elsewhere(hub_factory, dicom_config_data, tmp_path: Path,
                                                      db_url: str) -> None:
    data = dicom_config_data()
    hub = await hub_factory(data)
    source = config_file(tmp_path / "source.toml", data, tmp_path / "hub.db", hub.data_dir, tmp_path / "dicom")
    paths = write_synthetic_series(tmp_path / "s", 80, rows=32, columns=32)
    ingest = asyncio.create_task(asyncio.to_thread(
        send_files, "127.0.0.1", dicom_port(hub), paths, called_ae=HUB_AE, calling_ae=PRACTICE_AE,
        associations=2))

    async def stored() -> int:
        async with hub.sessionmaker() as s:
            return await s.scalar(select(func.count()).select_from(Instance))

    deadline = time.monotonic() + 60
    while await stored() < 5:
        assert time.monotonic() < deadline, "ingest did not start"
        await asyncio.sleep(0.05)
    dest = tmp_path / "backup"
    made = await asyncio.to_thread(vethub, "backup", str(dest), "--config", str(source), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    results = await ingest
    assert all(r.status == 0 for r in results)

    restored = tmp_path / "elsewhere"
    target = config_file(tmp_path / "target.toml", data, restored / "hub.db", restored / "var",
                         restored / "images")
    back = await asyncio.to_thread(vethub, "restore", str(dest), "--config", str(target), cwd=tmp_path)
    assert back.returncode == 0, back.stderr
    again = await asyncio.to_thread(vethub, "restore", str(dest), "--config", str(target), cwd=tmp_path)
    assert again.returncode == 1 and "must be empty" in again.stderr  # never over a live store
    checked = await asyncio.to_thread(vethub, "verify", "--config", str(target), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    with sqlite3.connect(restored / "hub.db") as conn:
        rows = dict(conn.execute("SELECT sop_instance_uid, path FROM instances"))
    async with hub.sessionmaker() as s:
        original = dict((await s.execute(select(Instance.sop_instance_uid, Instance.path))).all())
    assert 5 <= len(rows) <= len(original) == 80
    assert rows.items() <= original.items()  # a consistent subset
    for rel in rows.values():
        assert (restored / "images" / rel).read_bytes() == (tmp_path / "dicom" / rel).read_bytes()
    files = [p for p in (restored / "images").rglob("*.dcm")]
    assert len(files) == len(rows)

    # verify notices damage
    files[0].write_bytes(files[0].read_bytes()[:-1] + b"\x00")
    damaged = await asyncio.to_thread(vethub, "verify", "--config", str(target), cwd=tmp_path)
    assert damaged.returncode == 1 and "checksum differs" in damaged.stdout
