"""Storage checks: free space against the watermark, and a write probe.

A receiver that refuses instances only once ``write()`` fails with ENOSPC has already filled
the disk the database, the logs and the WAL share. The watermark refuses new work earlier,
while there is still room to finish what is in progress.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from hub.ops.config import operations_config
from hub.ops.metrics import STORAGE_FREE


class StorageLow(Exception):
    """A storage root has less free space than ``[operations] min_free_bytes``."""

    reason = "disk_low"


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def free_bytes(root: Path) -> int:
    """Free bytes for an unprivileged writer under ``root`` (its nearest existing parent)."""
    free = shutil.disk_usage(_existing(root)).free
    STORAGE_FREE.labels(str(root)).set(free)
    return free


DEFAULT_WATERMARK = 1024**3
DEFAULT_WATERMARK_SHARE = 0.05


def _existing(root: Path) -> Path:
    path = root
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def watermark(root: Path, min_free: int | None) -> int:
    """``min_free``, or by default 1 GiB or 5% of the filesystem, whichever is smaller."""
    if min_free is not None:
        return min_free
    return min(DEFAULT_WATERMARK, int(shutil.disk_usage(_existing(root)).total * DEFAULT_WATERMARK_SHARE))


def storage_low(root: Path, min_free: int | None) -> str | None:
    """Why ``root`` is below the watermark, or None."""
    free = free_bytes(root)
    min_free = watermark(root, min_free)
    if free < min_free:
        return (f"storage below the watermark: {_human(free)} free under {root}, "
                f"[operations] min_free_bytes is {_human(min_free)}")
    return None


def check_storage_low(hub: Any, root: Path) -> None:
    """Raise :class:`StorageLow` when ``root`` is below the hub's watermark (the DICOM receiver
    calls this before it accepts an association)."""
    why = storage_low(root, operations_config(hub).min_free_bytes)
    if why is not None:
        raise StorageLow(why)


def write_probe(root: Path) -> str | None:
    """Write, fsync and remove a small file under ``root``; why it failed, or None."""
    probe = root / f".vethub-write-probe-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, b"probe\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as err:
        return f"cannot write under {root}: {err.strerror or err}"
    return None


def storage_roots(hub: Any) -> dict[str, Path]:
    """Every storage root the hub writes to: the data dir, and any plugin section's
    ``storage_root`` (the DICOM image store), by check name."""
    roots = {"data_dir": Path(hub.data_dir)}
    for name in hub.config.redacted():
        section = hub.config.section(name)
        root = getattr(section, "storage_root", None) if section is not None else None
        if section is not None and hasattr(section, "storage_root"):
            roots[name] = Path(root) if root else Path(hub.data_dir) / name
    return roots


async def storage_health(hub: Any, root: Path) -> tuple[bool, str]:
    import asyncio

    def _check() -> tuple[bool, str]:
        why = storage_low(root, operations_config(hub).min_free_bytes) or write_probe(root)
        if why:
            return False, why
        return True, f"{_human(free_bytes(root))} free under {root}"

    return await asyncio.to_thread(_check)
