"""Run `vethub run` as a real process for the DICOM tests that kill or starve it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO


def upgrade(config: Path, cwd: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "hub.cli", "db", "upgrade", "--config", str(config)],
        cwd=cwd, check=True, capture_output=True, timeout=120,
    )


def start(
    config: Path,
    cwd: Path,
    *,
    output: IO[str] | int = subprocess.DEVNULL,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "run", "--config", str(config), "--port", "0"],
        cwd=cwd, stdout=output, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=preexec_fn,
    )


def wait_listening(proc: subprocess.Popen[str], port: int, deadline_s: float = 60) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"vethub run exited {proc.returncode}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("the DICOM receiver did not start listening in time")


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name (state first), or None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def children(parent: int) -> set[int]:
    """The live (not zombie) children of ``parent``."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            if int(fields[1]) == parent and fields[0] != "Z":
                found.add(int(entry))
    return found
