"""Durable storage of received DICOM instances under the storage root.

Nothing read from a data set is trusted as a path: the relative path of an instance is built
only from the practice id (an integer) and three UIDs that must match the DICOM UID grammar
(PS3.5 §9.1: dot-separated numeric components without leading zeros, at most 64 characters).

A write is durable before it returns: the bytes go to a temporary file in the target
directory, which is fsynced, given its final name and the directory fsynced, so after a crash a
file under its final name is always complete. The temporary file is an unnamed one
(``O_TMPFILE``) linked into place, where the filesystem has them: no name to clean up after a
crash, and the inode is created outside the directory's lock, which the writes of several
associations into one series directory otherwise queue on (docs/performance.md). Elsewhere it
is a named ``.tmp`` file renamed over the final name. Any OS error (disk full, I/O error, a
read-only or refusing root) becomes :class:`StorageUnavailable`, which the receiver answers
with 0xA700 (out of resources); the temporary file is removed.
"""

from __future__ import annotations

import os
import random
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

__all__ = [
    "STATUS_OUT_OF_RESOURCES",
    "DicomStore",
    "InvalidUID",
    "PendingFile",
    "StorageError",
    "StorageUnavailable",
    "StoredFile",
    "instance_relpath",
    "is_valid_uid",
    "validate_uid",
]

STATUS_OUT_OF_RESOURCES = 0xA700

_random = random.Random()

_UID_RE = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


class StorageError(Exception):
    """Base class of storage failures; ``status`` is the C-STORE status to answer with."""

    status: int = 0xC000


class InvalidUID(StorageError):
    """A UID that would become part of a path does not match the UID grammar."""

    status = 0xA900


class StorageUnavailable(StorageError):
    """The storage root could not take the instance (disk full, I/O error, refused)."""

    status = STATUS_OUT_OF_RESOURCES


def is_valid_uid(value: object) -> bool:
    """True when ``value`` is a str matching the DICOM UID grammar (at most 64 characters)."""
    return isinstance(value, str) and 0 < len(value) <= 64 and _UID_RE.fullmatch(value) is not None


def validate_uid(value: object, what: str) -> str:
    """Return ``value`` if it is a valid UID, else raise :class:`InvalidUID` naming ``what``."""
    if not is_valid_uid(value):
        shown = repr(value)[:80]
        raise InvalidUID(f"{what} {shown} is not a valid DICOM UID")
    return value  # type: ignore[return-value]


def instance_relpath(
    practice_id: int, study_uid: str, series_uid: str, sop_instance_uid: str
) -> PurePosixPath:
    """The path of an instance relative to the storage root, from validated values only."""
    if not isinstance(practice_id, int) or isinstance(practice_id, bool) or practice_id <= 0:
        raise InvalidUID(f"practice id {practice_id!r} is not a positive integer")
    return PurePosixPath(
        f"p{practice_id}",
        validate_uid(study_uid, "Study Instance UID"),
        validate_uid(series_uid, "Series Instance UID"),
        validate_uid(sop_instance_uid, "SOP Instance UID") + ".dcm",
    )


@dataclass(frozen=True, slots=True)
class StoredFile:
    """Where a received instance's file is, and whether this call wrote it."""
    relpath: PurePosixPath
    path: Path
    size: int
    written: bool  # False when an existing file was kept (re-sent instance, no overwrite)


_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024


def _write_all(fd: int, views: list[memoryview]) -> int:
    """Write every buffer: one writev per IOV_MAX of them when the kernel takes each whole
    (it usually does), single writes for whatever a short writev left."""
    total = 0
    for start in range(0, len(views), _IOV_MAX):
        group = views[start : start + _IOV_MAX]
        size = sum(v.nbytes for v in group)
        written = os.writev(fd, group)
        if written < size:
            for view in group:
                if written >= view.nbytes:
                    written -= view.nbytes
                    continue
                view = view[written:]
                written = 0
                while view:
                    view = view[os.write(fd, view) :]
        total += size
    return total


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tmpfile_supported(directory: Path) -> bool:
    """True when an unnamed temporary file can be made in ``directory`` and linked by name:
    the filesystem has ``O_TMPFILE`` and linkat through ``/proc/self/fd`` works
    (``AT_EMPTY_PATH`` would need a capability). Tried once, with a name that is removed."""
    if not hasattr(os, "O_TMPFILE"):
        return False
    probe = _temp_name(Path("probe"))
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fd = os.open(".", os.O_WRONLY | os.O_TMPFILE | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        try:
            os.link(f"/proc/self/fd/{fd}", probe, dst_dir_fd=dir_fd, follow_symlinks=True)
        finally:
            os.close(fd)
        os.unlink(probe, dir_fd=dir_fd)
    except OSError:  # EOPNOTSUPP, EISDIR from an older kernel, no /proc, ...
        return False
    finally:
        os.close(dir_fd)
    return True


class DicomStore:
    """Writes instances under ``root``; safe to call from several receiver threads at once."""

    def __init__(
        self, root: Path | str, *, overwrite: bool = False, tmpfile: bool | None = None
    ) -> None:
        """``tmpfile``: write through unnamed temporary files (True), named ones (False), or
        whichever the filesystem allows, found out at the first write (None)."""
        self.root = Path(root).resolve()
        self.overwrite = overwrite
        self._tmpfile = tmpfile
        self._known_dirs: set[Path] = set()
        self._inside: set[Path] = set()  # directories whose resolved path was under the root
        self._lock = threading.Lock()

    def path_of(self, relpath: PurePosixPath) -> Path:
        path = self.root.joinpath(*relpath.parts)
        # Defence in depth: the relpath is built from validated values, but never write
        # anywhere that does not resolve under the root. Resolving is a stat per level, so a
        # directory is resolved once (a series directory holds hundreds of instances).
        parent = path.parent
        if parent not in self._inside:
            if not parent.resolve(strict=False).is_relative_to(self.root):
                raise InvalidUID(f"path {relpath} leaves the storage root")
            if parent.is_dir():
                self._inside.add(parent)
        return path

    def _ensure_dir(self, directory: Path) -> list[Path]:
        """Create ``directory`` and its missing parents; the directories whose entries are not
        yet known durable, for the first file's commit to fsync (:meth:`PendingFile.commit`).

        Those fsyncs wait for the file's own: a new study's first instance then costs two
        journal commits (its file's, which carries the new directories too, and its
        directory's, after which the parents' fsyncs find nothing left to write) where a
        fsync after each mkdir cost five (docs/performance.md). A directory found already
        there but not yet known has its parents fsynced too: another association may have
        just created it and not yet fsynced them."""
        if directory in self._known_dirs:
            return []
        missing: list[Path] = []
        probe = directory
        while not probe.exists():
            missing.append(probe)
            if probe == self.root or probe.parent == probe:
                break
            probe = probe.parent
        for level in reversed(missing):
            try:
                level.mkdir()
            except FileExistsError:
                pass
        parents: list[Path] = []
        level = directory
        while level != self.root and level.parent != level:
            level = level.parent
            parents.append(level)
        if missing and missing[-1] == self.root:
            parents.append(self.root.parent)
        return parents

    def _known(self, directory: Path) -> None:
        with self._lock:
            self._known_dirs.add(directory)

    def write(self, relpath: PurePosixPath, chunks: Iterable[bytes | memoryview]) -> StoredFile:
        """Write ``chunks`` as the file at ``relpath``, durably; see the module docstring."""
        opened = self.open(relpath)
        if isinstance(opened, StoredFile):
            return opened
        try:
            opened.write(chunks)
            return opened.commit()
        finally:
            opened.close()

    def open(self, relpath: PurePosixPath) -> PendingFile | StoredFile:
        """A temporary file for ``relpath``, to write in pieces and then :meth:`PendingFile.commit`
        (a large data set is written while it arrives); or the file already there, which a
        re-sent instance keeps unless ``overwrite``."""
        path = self.path_of(relpath)
        try:
            if not self.overwrite:
                try:
                    return StoredFile(relpath, path, path.stat().st_size, written=False)
                except FileNotFoundError:
                    pass
            unsynced = self._ensure_dir(path.parent)
            if self._tmpfile is None:
                self._tmpfile = tmpfile_supported(path.parent)
            return PendingFile(self, relpath, path, unsynced)
        except OSError as err:
            raise self._unavailable(relpath, path, err) from err

    def _unavailable(self, relpath: PurePosixPath, path: Path, err: OSError) -> StorageUnavailable:
        with self._lock:
            self._known_dirs.discard(path.parent)
        return StorageUnavailable(f"cannot store {relpath.name}: {err.strerror or err}")


class PendingFile:
    """An instance's file being written: unnamed (``O_TMPFILE``) or under a temporary name
    until :meth:`commit` fsyncs it and gives it its final name. :meth:`close` without a commit
    leaves nothing behind. Not thread-safe: one association writes it."""

    def __init__(
        self, store: DicomStore, relpath: PurePosixPath, path: Path, unsynced: list[Path] | None = None
    ) -> None:
        """``unsynced``: directories to fsync after this file's directory (new ones' parents)."""
        self.store, self.relpath, self.path = store, relpath, path
        self.unsynced = unsynced or []
        self.size = 0
        self._tmp: str | None = None  # the temporary name, for a named file
        self._fd = -1
        self._dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if store._tmpfile:
                self._fd = os.open(
                    ".", os.O_WRONLY | os.O_TMPFILE | os.O_CLOEXEC, 0o640, dir_fd=self._dir_fd
                )
            else:
                self._tmp = _temp_name(path)
                self._fd = os.open(
                    self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640,
                    dir_fd=self._dir_fd,
                )
        except OSError as err:
            self.close()
            raise store._unavailable(relpath, path, err) from err

    def write(self, chunks: Iterable[bytes | memoryview]) -> None:
        try:
            self.size += _write_all(self._fd, [memoryview(chunk) for chunk in chunks])
        except OSError as err:
            raise self.store._unavailable(self.relpath, self.path, err) from err

    def commit(self) -> StoredFile:
        """fsync the file, give it its final name, fsync the directory (and, for the first
        file in a directory, the parents whose entries are not yet durable)."""
        try:
            os.fsync(self._fd)
            stored = self._link() if self._tmp is None else self._rename()
            if stored.written:
                os.fsync(self._dir_fd)
            if self.unsynced:
                for directory in self.unsynced:
                    _fsync_dir(directory)
                self.store._known(self.path.parent)
            return stored
        except OSError as err:
            raise self.store._unavailable(self.relpath, self.path, err) from err

    def _link(self) -> StoredFile:
        source, name, dir_fd = f"/proc/self/fd/{self._fd}", self.path.name, self._dir_fd
        if not self.store.overwrite:
            try:  # a file already there stays: linkat does not replace
                os.link(source, name, dst_dir_fd=dir_fd, follow_symlinks=True)
            except FileExistsError:  # sent twice at once, and the other write won
                return StoredFile(self.relpath, self.path, self.path.stat().st_size, False)
            return StoredFile(self.relpath, self.path, self.size, written=True)
        tmp = _temp_name(self.path)
        os.link(source, tmp, dst_dir_fd=dir_fd, follow_symlinks=True)
        try:
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError:
            _unlink_quietly(tmp, dir_fd)
            raise
        return StoredFile(self.relpath, self.path, self.size, written=True)

    def _rename(self) -> StoredFile:
        assert self._tmp is not None
        os.close(self._fd)
        self._fd = -1
        os.replace(self._tmp, self.path.name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
        self._tmp = None
        return StoredFile(self.relpath, self.path, self.size, written=True)

    def close(self) -> None:
        """Release the descriptors; a file not committed goes (an unnamed one by itself)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._tmp is not None:
            _unlink_quietly(self._tmp, self._dir_fd)
            self._tmp = None
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
            self._dir_fd = -1


def _temp_name(path: Path) -> str:
    # Not uuid4: it reads the kernel's random source, a system call per instance; the name
    # only has to be unique among writes in flight, and O_EXCL (or linkat) checks that.
    return f".{path.name}.{os.getpid()}-{_random.getrandbits(64):016x}.tmp"


def _unlink_quietly(name: str, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass
