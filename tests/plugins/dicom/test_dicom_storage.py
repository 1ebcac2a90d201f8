"""DicomStore: durable writes through unnamed (O_TMPFILE) or named temporary files."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from hub.testing.fixtures_env import skip_or_fail
from plugins.dicom.storage import (
    DicomStore,
    StorageUnavailable,
    instance_relpath,
    tmpfile_supported,
)

REL = instance_relpath(7, "1.2.3", "1.2.3.4", "1.2.3.4.5")


def _entries(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture(params=[True, False], ids=["unnamed", "named"])
def store(request, tmp_path: Path) -> DicomStore:
    if request.param and not tmpfile_supported(tmp_path):
        skip_or_fail("O_TMPFILE", "this filesystem has no O_TMPFILE")
    return DicomStore(tmp_path / "root", tmpfile=request.param)


def test_write_is_whole_under_its_name_and_leaves_no_temp_file(store: DicomStore):
    chunks = [b"head", memoryview(b"x" * 100_000), b"tail"]
    stored = store.write(REL, chunks)
    assert stored.written and stored.size == 100_008
    assert stored.path.read_bytes() == b"head" + b"x" * 100_000 + b"tail"
    assert _entries(store.root) == [str(REL)]
    assert stored.path.stat().st_mode & 0o777 == 0o640


def test_resent_instance_keeps_the_first_file(store: DicomStore):
    store.write(REL, [b"first"])
    again = store.write(REL, [b"second, longer"])
    assert not again.written and again.size == len(b"first")
    assert again.path.read_bytes() == b"first"
    assert _entries(store.root) == [str(REL)]


def test_overwrite_replaces_the_file(store: DicomStore):
    store.overwrite = True
    store.write(REL, [b"first"])
    again = store.write(REL, [b"second, longer"])
    assert again.written and again.size == len(b"second, longer")
    assert again.path.read_bytes() == b"second, longer"
    assert _entries(store.root) == [str(REL)]


def test_filesystem_decides_when_not_told(tmp_path: Path):
    store = DicomStore(tmp_path / "root")
    store.write(REL, [b"data"])
    assert store._tmpfile is tmpfile_supported(tmp_path)  # found out once, at the first write
    assert (store.root / str(REL)).read_bytes() == b"data"
    assert _entries(store.root) == [str(REL)]  # the probe's name is gone


def test_the_same_instance_written_at_once_is_stored_once(tmp_path: Path):
    """Two associations sending one SOP Instance UID together: one file, whole, one winner."""
    if not tmpfile_supported(tmp_path):
        skip_or_fail("O_TMPFILE", "this filesystem has no O_TMPFILE")
    store = DicomStore(tmp_path / "root", tmpfile=True)
    store.write(instance_relpath(7, "1.2.3", "1.2.3.4", "9.9"), [b"creates the directory"])
    barrier, results = threading.Barrier(8), []

    def send(n: int) -> None:
        barrier.wait()
        results.append((n, store.write(REL, [bytes([65 + n]) * 50_000])))

    threads = [threading.Thread(target=send, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [n for n, r in results if r.written]
    assert len(results) == 8 and len(winners) == 1
    assert (store.root / str(REL)).read_bytes() == bytes([65 + winners[0]]) * 50_000
    assert all(r.size == 50_000 for _, r in results)
    assert len(_entries(store.root)) == 2


@pytest.mark.parametrize("tmpfile", [True, False], ids=["unnamed", "named"])
def test_disk_full_leaves_nothing_behind(tiny_tmpfs: Path, tmpfile: bool):
    store = DicomStore(tiny_tmpfs / "root", tmpfile=tmpfile)
    small = store.write(instance_relpath(7, "1.2.3", "1.2.3.4", "1.1"), [b"s" * 10_000])
    with pytest.raises(StorageUnavailable, match="No space left"):
        store.write(REL, [b"L" * 400_000])  # more than the 256 KiB tmpfs holds
    assert _entries(store.root) == [str(small.relpath)]
    assert small.path.read_bytes() == b"s" * 10_000
    # Space freed again: the same instance now goes through.
    assert store.write(REL, [b"L" * 100_000]).written


def test_a_root_that_cannot_be_created_is_unavailable(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    store = DicomStore(blocker / "root")
    with pytest.raises(StorageUnavailable, match="cannot store"):
        store.write(REL, [b"data"])
    assert blocker.read_text() == "x"
