"""`vethub check-config` names a PIMS drop folder that does not exist (the file is valid; the
sync would still fail) and says how a company without a destination gets its cases."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def test_warns_about_undeliverable_company_and_missing_drop_dir(write_config, tmp_path: Path, db_url: str) -> None:
    (tmp_path / "drop").mkdir()
    config = write_config({
        "companies": [{"slug": "rads", "name": "Rads", "modalities": ["DX"]},
                      {"slug": "ok-rads", "name": "OK", "modalities": ["CT"],
                       "destination": {"host": "pacs.example", "port": 104, "ae_title": "PACS"}}],
        "practices": [{"slug": "p", "name": "P", "pims": [
            {"connector": "file_export", "name": "files", "drop_dir": str(tmp_path / "dorp")},
            {"connector": "file_export", "name": "good", "drop_dir": str(tmp_path / "drop")}]}],
    })
    proc = subprocess.run([sys.executable, "-m", "hub.cli", "check-config", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1, proc.stderr
    assert "practices[0].pims[0].drop_dir" in warnings[0] and "dorp does not exist" in warnings[0]
    assert str(config) in warnings[0]
    # a company without a destination is named with how it gets its cases
    assert "company rads: cases delivered in the hub" in proc.stdout
