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
from plugins.dicom.storage import DicomStore, StorageUnavailable, instance_relpath


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
