"""`vethub run` as a real subprocess: serves, answers /healthz, stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest


def start_daemon(config: Path, cwd: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "run", "--config", str(config), "--port", "0", *extra],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def wait_for_port(proc: subprocess.Popen[str], deadline_s: float = 60) -> int:
    deadline = time.monotonic() + deadline_s
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                raise AssertionError(f"vethub run exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
            continue
        match = re.search(r"listening on http://[\d.]+:(\d+)", line)
        if match:
            return int(match.group(1))
    raise AssertionError("vethub run did not report its port in time")


@pytest.fixture
def daemon(write_config: Any, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    config = write_config({"dicom": {"port": 0}} if _has_dicom() else None)
    subprocess.run([sys.executable, "-m", "hub.cli", "db", "upgrade", "--config", str(config)],
                   cwd=tmp_path, check=True, capture_output=True, timeout=120)
    proc = start_daemon(config, tmp_path, "--log-format", "json")
    try:
        yield proc, wait_for_port(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def _has_dicom() -> bool:
    from hub.plugins import BUILTIN_PLUGINS

    return any(name == "dicom" for name, _ in BUILTIN_PLUGINS)


async def test_run_answers_healthz_and_stops_on_sigterm(daemon: tuple[subprocess.Popen[str], int]) -> None:
    proc, port = daemon
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
            assert response.status == 200
            assert (await response.json())["status"] == "ok"
        async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
            assert (await response.json())["checks"]["database"]["ok"] is True
        async with http.get(f"http://127.0.0.1:{port}/api/practices") as response:
            assert response.status == 401
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert proc.stderr is not None
    logs = proc.stderr.read()
    assert '"message": "stopped"' in logs  # JSON log lines, one per event


def test_run_refuses_a_broken_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[http]\nport = -5\n", encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "hub.cli", "run", "--config", str(bad)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"{bad}: http.port:" in result.stderr and "Traceback" not in result.stderr


def test_run_refuses_a_postgres_schema_behind_head(postgres_url: str, tmp_path: Path) -> None:
    config = tmp_path / "pg.toml"
    config.write_text(f'[database]\nurl = "{postgres_url}"\n[hub]\ndata_dir = "{tmp_path / "var"}"\n', encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "hub.cli", "run", "--config", str(config), "--port", "0"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "vethub db upgrade" in result.stderr
