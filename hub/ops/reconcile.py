"""Reconcile the image store with the database: files without a row, rows without a file.

A file without a row is what a crash between the fsync and the commit leaves (its C-STORE was
never acknowledged, so the modality sends it again), or a row lost with a damaged database.
Such files are moved, never deleted, to ``<root>/quarantine/<date>/<relpath>``, where an
operator can re-send them (``storescu +sd``) or delete them. A row whose file is missing cannot
be repaired here: it is listed. Both are reported as operator events.

Only files older than ``min_age`` are taken for orphans, so a file whose row is being
committed while this runs (at start-up, beside the receiver) is never moved.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from hub import events
from hub.imaging.models import Instance

log = logging.getLogger(__name__)

QUARANTINE = "quarantine"
MIN_AGE = 600.0  # seconds; far beyond the receiver's commit timeout
SAMPLE = 50


@dataclass
class ReconcileReport:
    """What reconciling the image store found: orphan files moved aside, rows without a file."""
    root: Path
    files: int = 0
    rows: int = 0
    orphans: list[str] = field(default_factory=list)  # relative paths
    quarantined: list[str] = field(default_factory=list)
    missing: list[tuple[int, str]] = field(default_factory=list)  # (instance id, path)

    @property
    def clean(self) -> bool:
        return not self.orphans and not self.missing


def image_root(hub: Any) -> Path | None:
    section = hub.config.section("dicom")
    if section is None:
        return None
    root = getattr(section, "storage_root", None)
    return Path(root or Path(hub.data_dir) / "dicom").resolve()


def _walk(root: Path, min_age: float) -> tuple[set[str], set[str]]:
    """(every instance file's relative path, those old enough to be orphans)."""
    now = time.time()
    found, old = set(), set()
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root:
            dirnames[:] = [d for d in dirnames if d != QUARANTINE and not d.startswith(".")]
        for name in filenames:
            if not name.endswith(".dcm"):
                continue  # temporary files, probes
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            found.add(rel)
            try:
                if now - path.stat().st_mtime >= min_age:
                    old.add(rel)
            except FileNotFoundError:
                found.discard(rel)
    return found, old


def _quarantine(root: Path, rels: list[str], stamp: str) -> list[str]:
    moved = []
    for rel in rels:
        target = root / QUARANTINE / stamp / rel
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(root / rel, target)
            moved.append(rel)
        except OSError as err:
            log.warning("could not quarantine %s: %s", rel, err)
    return moved


async def reconcile(hub: Any, *, dry_run: bool = False, min_age: float = MIN_AGE) -> ReconcileReport | None:
    """Compare the image store with the ``instances`` table; quarantine orphans (unless
    ``dry_run``) and record what was found. None when the hub has no image store."""
    root = image_root(hub)
    if root is None or not root.is_dir():
        return None
    found, old = await asyncio.to_thread(_walk, root, min_age)
    async with hub.sessionmaker() as session:
        result = await session.execute(select(Instance.id, Instance.path, Instance.purged_at))
        every, rows = set(), {}
        for iid, path, purged_at in result:
            every.add(path)  # a purged row's file is retention's to delete, not an orphan
            if purged_at is None:
                rows[path] = iid
    report = ReconcileReport(root, files=len(found), rows=len(rows))
    report.orphans = sorted(old - every)
    report.missing = sorted((iid, path) for path, iid in rows.items() if path not in found)
    # a row whose file was written after the walk began is not missing: look again
    report.missing = [(i, p) for i, p in report.missing if not (root / p).exists()]
    if report.orphans and not dry_run:
        stamp = hub.clock.now().strftime("%Y%m%dT%H%M%SZ")
        report.quarantined = await asyncio.to_thread(_quarantine, root, report.orphans, stamp)
    if not dry_run and not report.clean:
        await _record(hub, report)
    return report


async def _record(hub: Any, report: ReconcileReport) -> None:
    async with hub.transaction() as session:
        if report.orphans:
            where = root_note = f"{report.root / QUARANTINE}"
            await events.record(
                session, "dicom.orphan_files",
                f"{len(report.orphans)} file(s) in the image store had no row; "
                f"{len(report.quarantined)} moved to {root_note}",
                reason="no_row", level=logging.WARNING,
                data={"count": len(report.orphans), "quarantined": len(report.quarantined),
                      "quarantine": where, "paths": report.orphans[:SAMPLE]})
        if report.missing:
            await events.record(
                session, "dicom.missing_files",
                f"{len(report.missing)} instance row(s) have no file under {report.root}",
                reason="no_file", level=logging.ERROR,
                data={"count": len(report.missing),
                      "instances": [{"id": i, "path": p} for i, p in report.missing[:SAMPLE]]})
