"""`vethub run` on an unusable database, image root or port: one line naming the file (or
address), the key and a remedy, a documented exit code, and a traceback only with --debug."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hub.ops.startup import ExitCode


def run_hub(config: Path, cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hub.cli", "run", "--config", str(config), *extra],
                          cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def sqlite_config(write_config: Any, tmp_path: Path, db: Path, **sections: Any) -> Path:
    return write_config({"database": {"url": f"sqlite+aiosqlite:///{db}"}, "dicom": {"port": 0}, **sections})


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_file_that_is_not_a_database(write_config, tmp_path: Path, db_url: str) -> None:
    db = tmp_path / "hub.db"
    db.write_bytes(b"this is not SQLite\n" * 500)
    proc = run_hub(sqlite_config(write_config, tmp_path, db), tmp_path, "--port", "0")
    assert proc.returncode == ExitCode.DATABASE
    line = one_line_error(proc)
    assert str(db) in line and "database.url" in line and "restore" in line
    debug = run_hub(sqlite_config(write_config, tmp_path, db), tmp_path, "--port", "0", "--debug")
    assert debug.returncode == ExitCode.DATABASE and "Traceback" in debug.stderr


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_read_only_database(write_config, tmp_path: Path, db_url: str) -> None:
    """Reported as the database, not as "plugin 'pims' failed"."""
    ro = tmp_path / "ro"
    ro.mkdir()
    db = ro / "hub.db"
    import sqlite3

    sqlite3.connect(db).execute("CREATE TABLE t (x)").connection.close()
    if os.geteuid() == 0:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(ro)], capture_output=True)
        if mounted.returncode != 0:
            pytest.skip("cannot mount a tmpfs")
        sqlite3.connect(db).execute("CREATE TABLE t (x)").connection.close()
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
    else:
        db.chmod(0o400)
        ro.chmod(0o500)
    try:
        proc = run_hub(sqlite_config(write_config, tmp_path, db), tmp_path, "--port", "0")
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", "-l", str(ro)], check=False)
        else:
            ro.chmod(0o700)
    assert proc.returncode == ExitCode.DATABASE, proc.stderr
    line = one_line_error(proc)
    assert "database.url" in line and "writable" in line and "pims" not in line


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_an_image_root_that_cannot_be_created(write_config, tmp_path: Path, db_url: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    config = write_config({"dicom": {"port": 0, "storage_root": str(blocker / "dicom")}})
    proc = run_hub(config, tmp_path, "--port", "0")
    assert proc.returncode == ExitCode.STORAGE
    line = one_line_error(proc)
    assert str(blocker / "dicom") in line and "dicom.storage_root" in line


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("which", ["http", "dicom"])
def test_a_port_in_use(write_config, tmp_path: Path, db_url: str, which: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        if which == "http":
            proc = run_hub(write_config({"dicom": {"port": 0}}), tmp_path, "--port", str(port))
        else:
            proc = run_hub(write_config({"dicom": {"port": port}}), tmp_path, "--port", "0")
    assert proc.returncode == ExitCode.PORT, proc.stderr
    line = one_line_error(proc)
    assert f"127.0.0.1:{port}" in line and f"{which}.port" in line and "in use" in line
