"""Out of inodes: the temporary file cannot even be created, and the error says why.

Written against a surviving mutant: when the named temporary file was never created, the
clean-up's own "no such file" must not replace the real cause in what the receiver reports.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.testing.fixtures_env import skip_or_fail
from plugins.dicom.storage import (
    DicomStore,
    InvalidUID,
    StorageError,
    StorageUnavailable,
    instance_relpath,
    tmpfile_supported,
)


@pytest.fixture
def few_inodes(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs with room for 16 inodes (needs root and mount, as tiny_tmpfs)."""
    mount = tmp_path / "few"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        skip_or_fail("TMPFS", "mounting a tmpfs needs root and mount(8)")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,nr_inodes=16", "tmpfs",
                           str(mount)], capture_output=True)
    if proc.returncode != 0:
        skip_or_fail("TMPFS", f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("tmpfile", [True, False], ids=["unnamed", "named"])
def test_no_inode_left_is_reported_as_no_space(few_inodes: Path, tmpfile: bool) -> None:
    store = DicomStore(few_inodes / "root", tmpfile=tmpfile)
    first = store.write(instance_relpath(7, "1.2.3", "1.2.3.4", "1.1"), [b"x" * 100])
    filler = 0
    while True:  # use up every inode left
        try:
            (few_inodes / f"filler{filler}").touch()
        except OSError:
            break
        filler += 1
    entries = sorted(p.name for p in first.path.parent.iterdir())
    with pytest.raises(StorageUnavailable, match="No space left on device"):
        store.write(instance_relpath(7, "1.2.3", "1.2.3.4", "1.2"), [b"y" * 100])
    assert sorted(p.name for p in first.path.parent.iterdir()) == entries  # nothing left behind


@pytest.mark.parametrize("tmpfile", [True, False], ids=["unnamed", "named"])
def test_a_failed_replace_leaves_no_temporary_file(tmp_path: Path, tmpfile: bool) -> None:
    """With overwrite on, the file is renamed over the final name; when that fails (here a
    directory is in the way) the temporary name is removed, not left for ever."""
    if tmpfile and not tmpfile_supported(tmp_path):
        skip_or_fail("O_TMPFILE", "this filesystem has no O_TMPFILE")
    store = DicomStore(tmp_path / "root", overwrite=True, tmpfile=tmpfile)
    relpath = instance_relpath(7, "1.2.3", "1.2.3.4", "1.1")
    blocker = store.root.joinpath(*relpath.parts)
    (blocker / "inside").mkdir(parents=True)
    with pytest.raises(StorageUnavailable):
        store.write(relpath, [b"z" * 100])
    assert sorted(p.name for p in blocker.parent.iterdir()) == [blocker.name]


@pytest.mark.parametrize(("uid", "status"), [("01.2", 0xA900), ("1.2." + "3" * 70, 0xA900)])
def test_a_uid_that_cannot_be_a_path_is_refused_with_its_status(uid: str, status: int) -> None:
    """Defence in depth behind the header checks: the store refuses it, and the receiver
    answers with the error's status (Error: data set does not match the SOP class)."""
    with pytest.raises(InvalidUID) as info:
        instance_relpath(7, "1.2.3", "1.2.3.4", uid)
    assert info.value.status == status and isinstance(info.value, StorageError)
    assert StorageUnavailable.status == 0xA700  # out of resources: the sender retries
