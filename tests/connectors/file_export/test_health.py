"""The file-export connector's health check, without a hub."""

from __future__ import annotations

from pathlib import Path

from connectors.file_export.connector import FileExportConfig, FileExportConnector
from hub.pims.connector import ConnectorContext, PimsConnector
from hub.testing.exports import generate, make_stable, write_export

CONTEXT = ConnectorContext("oak", "US")


async def test_file_export_health(tmp_path: Path) -> None:
    missing = FileExportConnector(FileExportConfig(drop_dir=tmp_path / "nope"), CONTEXT)
    assert not (await missing.health()).ok
    make_stable(*write_export(tmp_path / "drop", generate(3, seed=1)).values())
    ready = FileExportConnector(FileExportConfig(drop_dir=tmp_path / "drop"), CONTEXT)
    assert isinstance(ready, PimsConnector)
    health = await ready.health()
    assert health.ok and health.detail.startswith("5 file(s) waiting")  # clients ... visits
