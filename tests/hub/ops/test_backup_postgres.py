"""On PostgreSQL, `backup` dumps with pg_dump from one exported snapshot (the instance list
comes from the same snapshot), and `restore` loads it into an empty database."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from hub.db.models import Company
from hub.ops.backup import BackupError, backup, image_root_of, restore, verify
from hub.testing.dicom import send_files, write_synthetic_series
from hub.testing.fixtures_core import pg_admin
from hub.testing.fixtures_dicom import HUB_AE, PRACTICE_AE, dicom_port

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


@pytest.mark.skipif(shutil.which("pg_dump") is None, reason="pg_dump is not installed")
async def test_postgres_round_trip(hub_factory, dicom_config_data, make_config, tmp_path: Path, db_url: str) -> None:
    hub = await hub_factory(dicom_config_data())
    paths = write_synthetic_series(tmp_path / "s", 4, rows=8, columns=8)
    results = await asyncio.to_thread(send_files, "127.0.0.1", dicom_port(hub), paths,
                                      called_ae=HUB_AE, calling_ae=PRACTICE_AE)
    assert all(r.status == 0 for r in results)
    made = await backup(hub.config.database.url, image_root_of(hub.config), tmp_path / "backup")
    assert (made.database, made.rows, made.files) == ("postgresql", 4, 4)

    name = f"vethub_t_{uuid.uuid4().hex[:12]}"
    admin = make_url(db_url).set(database="postgres").render_as_string(hide_password=False)
    await pg_admin(admin, f'CREATE DATABASE "{name}"')
    try:
        target_url = make_url(db_url).set(database=name).render_as_string(hide_password=False)
        target = make_config(dicom_config_data(dicom={"storage_root": str(tmp_path / "restored")}),
                             database={"url": target_url}, hub={"data_dir": str(tmp_path / "var2")})
        await restore(tmp_path / "backup", target)
        with pytest.raises(BackupError, match="must be empty"):
            await restore(tmp_path / "backup", target)
        hub2 = await hub_factory(config=target)
        rows, problems = await verify(hub2)
        assert (rows, problems) == (4, [])
        async with hub2.sessionmaker() as s:
            assert await s.scalar(select(func.count()).select_from(Company)) == 2
        await hub2.stop()
    finally:
        await pg_admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
