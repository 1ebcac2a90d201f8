"""Acknowledged only after fsync, seen from the kernel: `vethub run` under strace.

A SIGKILL keeps the page cache, so the crash tests cannot see a missing fsync; a power cut
would. Here every system call of the daemon's file and socket work is logged, and for each
instance the sender got Success for, the log must show, in this order: the file fsynced after
its last write, linked (or renamed) to its final name, the directory fsynced, and only then the
C-STORE response with its SOP Instance UID written to the association's socket. New
directories on its path must have had their parent fsynced before that response too. Checked
for the one-process receiver, for [dicom] processes = 2, whose worker stores as well, for
pynetdicom's engine, and for the store's named-temporary-file path (filesystems without
O_TMPFILE), which `vethub run` takes only where the filesystem lacks it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hub.testing.dicom import send_files, write_synthetic_series
from hub.testing.fixtures_dicom import HUB_AE, PRACTICE_AE
from hub.testing.fixtures_env import needs

from .daemon import alive, children, upgrade, wait_listening
from .syscalls import check_instance, parse, processes, strace_command


def _strace_works() -> bool:
    if shutil.which("strace") is None:
        return False
    probe = subprocess.run(strace_command(os.devnull, ["true"]), capture_output=True, timeout=60)
    return probe.returncode == 0


pytestmark = [
    pytest.mark.slow,
    needs("STRACE", _strace_works(), "strace is not installed or cannot trace here (ptrace)"),
]

ASSOCIATIONS = 4  # one after another, so they go round the receiver processes
PER_ASSOCIATION = 3


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the files, not the database
@pytest.mark.parametrize(
    ("engine", "count"), [("hub", 1), ("hub", 2), ("pynetdicom", 1)],
    ids=["one-process", "two-processes", "pynetdicom-engine"],
)
def test_each_instance_is_fsynced_linked_and_its_directory_fsynced_before_success(
    engine, count, write_config, dicom_config_data, free_port, tmp_path
):
    data = dicom_config_data(dicom={"port": free_port, "engine": engine, "processes": count})
    config = write_config(data)
    upgrade(config, tmp_path)
    root = str(Path(data["dicom"]["storage_root"]).resolve())
    log = tmp_path / "strace.log"
    argv = [sys.executable, "-m", "hub.cli", "run", "--config", str(config), "--port", "0"]
    tracer = subprocess.Popen(
        strace_command(str(log), argv), cwd=tmp_path, stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        wait_listening(tracer, free_port, deadline_s=120)
        acknowledged = []
        for n in range(ASSOCIATIONS):
            paths = write_synthetic_series(tmp_path / f"s{n}", PER_ASSOCIATION)
            results = send_files("127.0.0.1", free_port, paths, called_ae=HUB_AE,
                                 calling_ae=PRACTICE_AE)
            assert [r.status for r in results] == [0] * PER_ASSOCIATION, results
            acknowledged += [r.sop_instance_uid for r in results]
    finally:
        _stop(tracer)

    calls = parse(log.read_text(encoding="utf-8", errors="replace"))
    owner = processes(calls)
    problems, storers = [], set()
    for uid in acknowledged:
        found, place = check_instance(calls, uid, root)
        problems += found
        if place is not None:
            storers.add(owner.get(place.call.tid, place.call.tid))
    assert problems == []
    assert len(storers) == count, f"instances stored by {len(storers)} processes, not {count}"


NAMED_STORE = """
import os, sys
from plugins.dicom.storage import DicomStore, instance_relpath
store = DicomStore(sys.argv[1], tmpfile=False)
for uid in sys.argv[2:]:
    store.write(instance_relpath(1, "1.2.3", "1.2.3.4", uid), [b"DICM" * 1000, b"data"])
    os.write(1, f"stored {uid}\\n".encode())  # what the receiver would acknowledge now
"""


def test_the_named_temporary_file_is_fsynced_renamed_and_its_directory_fsynced(tmp_path):
    root = tmp_path / "root"
    uids = ["1.2.3.4.5", "1.2.3.4.6"]
    log = tmp_path / "strace.log"
    subprocess.run(
        strace_command(str(log), [sys.executable, "-c", NAMED_STORE, str(root), *uids]),
        check=True, capture_output=True, timeout=120, cwd=Path(__file__).parents[3],
    )
    calls = parse(log.read_text(encoding="utf-8", errors="replace"))
    problems = []
    for uid in uids:
        found, place = check_instance(
            calls, uid, str(root.resolve()), lambda buf, u: buf == f"stored {u}\n".encode()
        )
        problems += found
        assert place is not None and place.call.name in {"renameat", "renameat2", "rename"}
    assert problems == []


def _stop(tracer: subprocess.Popen) -> None:
    """SIGTERM the traced daemon (strace's child) and wait for strace to end with it."""
    for pid in children(tracer.pid):
        os.kill(pid, signal.SIGTERM)
    try:
        tracer.wait(timeout=60)
    except subprocess.TimeoutExpired:
        for pid in children(tracer.pid):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        tracer.kill()
        tracer.wait(timeout=30)
