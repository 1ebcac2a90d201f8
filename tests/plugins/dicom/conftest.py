"""Fixtures shared by the DICOM tests."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from hub.db.models import Practice
from hub.imaging.models import Instance
from hub.testing.fixtures_env import skip_or_fail
from plugins.dicom.committer import Committer


@pytest.fixture
def tiny_tmpfs(tmp_path: Path):
    """A 256 KiB tmpfs (needs root and mount); skipped where it cannot be mounted, failed
    instead with VETHUB_REQUIRE_TMPFS=1 (CI)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        skip_or_fail("TMPFS", "mounting a tmpfs needs root and mount(8)")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True
    )
    if proc.returncode != 0:
        skip_or_fail("TMPFS", f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
async def committed(hub_factory, dicom_config_data):
    """(hub, committer, practice id, a function listing committed SOP Instance UIDs)."""
    data = dicom_config_data()
    data["dicom"]["enabled"] = False  # the committer alone, no receiver
    hub = await hub_factory(data)
    async with hub.sessionmaker() as s:
        practice_id = await s.scalar(select(Practice.id).where(Practice.slug == "vet-one"))
    committer = Committer(hub, stable_age=30, overwrite=False)
    committer.start(asyncio.get_running_loop())
    # A reader of its own (no BEGIN IMMEDIATE): it sees only what is committed.
    reader = create_async_engine(hub.config.database.url)

    async def uids() -> set[str]:
        async with reader.connect() as conn:
            return set((await conn.execute(select(Instance.sop_instance_uid))).scalars())

    yield hub, committer, practice_id, uids
    await asyncio.to_thread(committer.stop)
    await reader.dispose()
