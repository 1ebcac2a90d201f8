"""Backup, restore and verify: a consistent copy of the database and of the image store.

A backup is a folder:

- ``hub.db`` — SQLite, copied with SQLite's online backup API (a consistent snapshot while the
  hub keeps writing), or ``hub.pgdump`` — PostgreSQL, by ``pg_dump --format=custom``;
- ``images/<path>`` — every instance file the snapshot has a row for, copied, and
  ``manifest.jsonl`` — one line per file: ``{"path", "size", "sha256"}``;
- ``backup.json`` — when, from which database, how many rows and files.

Files are listed from the snapshot, not from the disk: a file is fsynced before its row
commits, so every row of the snapshot has its whole file, and files that arrive later (no row
in the snapshot) are left out. ``restore`` writes a backup into an empty data dir and checks
every file against the manifest; ``verify`` checks every row of a database against its file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

MANIFEST = "manifest.jsonl"
META = "backup.json"
CHUNK = 1024 * 1024


class BackupError(Exception):
    """The backup, restore or verify cannot go on; the message says why and what to do."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _empty_or_new(path: Path, what: str) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise BackupError(f"{path}: {what} must be a new or empty folder")
    path.mkdir(parents=True, exist_ok=True)


def _sqlite_path(url: str) -> Path | None:
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


def _libpq_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _rows_of_snapshot(db: Path) -> list[tuple[int, str, int]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return list(conn.execute("SELECT id, path, size_bytes FROM instances WHERE purged_at IS NULL ORDER BY id"))
    except sqlite3.OperationalError:
        return []  # no imaging tables
    finally:
        conn.close()


@dataclass
class BackupResult:
    """What a backup wrote and where, and any image files it could not find."""
    dest: Path
    database: str
    rows: int = 0
    files: int = 0
    bytes: int = 0
    missing: list[str] = field(default_factory=list)


async def backup(database_url: str, image_root: Path | None, dest: Path, *, images: bool = True) -> BackupResult:
    """Write a backup of the database and image store to ``dest`` (a new or empty folder)."""
    import asyncio

    _empty_or_new(dest, "the backup destination")
    sqlite = _sqlite_path(database_url)
    if sqlite is not None:
        rows = await asyncio.to_thread(_sqlite_backup, sqlite, dest / "hub.db")
        result = BackupResult(dest, "sqlite")
    else:
        rows = await _pg_dump(database_url, dest / "hub.pgdump")
        result = BackupResult(dest, "postgresql")
    result.rows = len(rows)
    await asyncio.to_thread(_copy_images, rows, image_root, dest, images, result)
    meta = {"created_at": datetime.now(UTC).isoformat(), "database": result.database,
            "rows": result.rows, "files": result.files, "bytes": result.bytes, "images": images,
            "missing": result.missing[:100]}
    (dest / META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return result


def _sqlite_backup(source: Path, snapshot: Path) -> list[tuple[int, str, int]]:
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(snapshot)
    try:
        src.backup(dst, pages=1024)  # in steps: the hub's writers are not held up for long
    finally:
        dst.close()
        src.close()
    return _rows_of_snapshot(snapshot)


def _copy_images(rows: list[tuple[int, str, int]], image_root: Path | None, dest: Path, images: bool,
                 result: BackupResult) -> None:
    with open(dest / MANIFEST, "w", encoding="utf-8") as manifest:
        for _iid, rel, _size in rows:
            source = (image_root / rel) if image_root is not None else None
            if source is None or not source.is_file():
                result.missing.append(rel)
                continue
            if images:
                target = dest / "images" / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
                digest, size = sha256_of(target), target.stat().st_size
            else:
                digest, size = sha256_of(source), source.stat().st_size
            manifest.write(json.dumps({"path": rel, "size": size, "sha256": digest}) + "\n")
            result.files += 1
            result.bytes += size
        manifest.flush()
        os.fsync(manifest.fileno())


async def _pg_dump(url: str, target: Path) -> list[tuple[int, str, int]]:
    """``pg_dump`` and the instance list from one snapshot: a repeatable-read transaction
    exports its snapshot, pg_dump runs on it (``--snapshot``) while the list is read in it."""
    import asyncio

    import asyncpg

    tool = shutil.which("pg_dump")
    if tool is None:
        raise BackupError("pg_dump is not installed: install PostgreSQL's client tools (Debian: "
                          "postgresql-client) of the server's major version")
    u = make_url(url)
    conn = await asyncpg.connect(user=u.username, password=u.password, host=u.host or "127.0.0.1",
                                 port=u.port or 5432, database=u.database)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
            proc = await asyncio.create_subprocess_exec(
                tool, "--format=custom", f"--snapshot={snapshot}", f"--file={target}", _libpq_url(url),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            _out, err = await proc.communicate()
            if proc.returncode != 0:
                raise BackupError(f"pg_dump failed: {err.decode(errors='replace').strip()[:500]}")
            exists = await conn.fetchval("SELECT to_regclass('instances') IS NOT NULL")
            rows = await conn.fetch("SELECT id, path, size_bytes FROM instances WHERE purged_at IS NULL "
                                    "ORDER BY id") if exists else []
    finally:
        await conn.close()
    return [(r["id"], r["path"], r["size_bytes"]) for r in rows]


def iter_manifest(backup_dir: Path) -> Iterator[dict[str, Any]]:
    with open(backup_dir / MANIFEST, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def image_root_of(config: Any) -> Path | None:
    """The image store's folder from the config (``[dicom] storage_root``), or None."""
    section = config.section("dicom")
    if section is None:
        return None
    root = getattr(section, "storage_root", None)
    return Path(root or Path(config.hub.data_dir) / "dicom").resolve()


async def restore(backup_dir: Path, config: Any) -> dict[str, Any]:
    """Write the backup at ``backup_dir`` into the database and image store ``config`` names,
    which must be empty; every file is checked against the manifest as it is copied."""
    import asyncio

    if not (backup_dir / META).is_file():
        raise BackupError(f"{backup_dir}: not a VetHub backup (no {META})")
    meta = json.loads((backup_dir / META).read_text(encoding="utf-8"))
    root = image_root_of(config)
    if meta.get("files") and meta.get("images") and root is None:
        raise BackupError("the backup has images but the config has no [dicom] section to put them in")
    if root is not None and root.exists() and any(root.iterdir()):
        raise BackupError(f"{root}: the image store (dicom.storage_root) must be empty to restore into")
    sqlite = _sqlite_path(config.database.url)
    if (meta["database"] == "sqlite") != (sqlite is not None):
        raise BackupError(f"the backup is of a {meta['database']} database; database.url is not")
    if sqlite is not None:
        if sqlite.exists():
            raise BackupError(f"{sqlite}: database.url names an existing file; restore into a new one")
        sqlite.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(_sqlite_backup, backup_dir / "hub.db", sqlite)
    else:
        await _pg_restore(config.database.url, backup_dir / "hub.pgdump")
    bad = await asyncio.to_thread(_restore_images, backup_dir, root if meta.get("images") else None,
                                  Path(config.hub.data_dir))
    if bad:
        raise BackupError(f"{len(bad)} file(s) do not match the manifest: {', '.join(bad[:10])}")
    return meta


def _restore_images(backup_dir: Path, root: Path | None, data_dir: Path) -> list[str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(backup_dir / MANIFEST, data_dir / "restored-manifest.jsonl")
    if root is None:
        return []
    bad = []
    for entry in iter_manifest(backup_dir):
        source = backup_dir / "images" / entry["path"]
        if not source.is_file() or sha256_of(source) != entry["sha256"]:
            bad.append(entry["path"])
            continue
        target = root / entry["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        with open(target, "rb") as f:
            os.fsync(f.fileno())
    return bad


async def _pg_restore(url: str, dump: Path) -> None:
    import asyncio

    import asyncpg

    tool = shutil.which("pg_restore")
    if tool is None:
        raise BackupError("pg_restore is not installed (Debian: postgresql-client)")
    u = make_url(url)
    conn = await asyncpg.connect(user=u.username, password=u.password, host=u.host or "127.0.0.1",
                                 port=u.port or 5432, database=u.database)
    try:
        tables = await conn.fetchval("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
    finally:
        await conn.close()
    if tables:
        raise BackupError(f"{u.database}: the database (database.url) must be empty to restore into")
    proc = await asyncio.create_subprocess_exec(
        tool, "--no-owner", "--exit-on-error", f"--dbname={_libpq_url(url)}", str(dump),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _out, err = await proc.communicate()
    if proc.returncode != 0:
        raise BackupError(f"pg_restore failed: {err.decode(errors='replace').strip()[:500]}")


async def verify(hub: Any, manifest: Path | None = None) -> tuple[int, list[str]]:
    """Check every instance row against its file (present, its size; with a manifest, its
    SHA-256). Returns (rows checked, problems)."""
    import asyncio

    from sqlalchemy import select

    from hub.imaging.models import Instance

    root = image_root_of(hub.config)
    async with hub.sessionmaker() as session:
        rows = list((await session.execute(select(Instance.id, Instance.path, Instance.size_bytes)
                                           .where(Instance.purged_at.is_(None)))).all())
    def _check() -> list[str]:
        sums = {}
        if manifest is not None and manifest.is_file():
            with open(manifest, encoding="utf-8") as f:
                sums = {e["path"]: e["sha256"] for e in map(json.loads, filter(str.strip, f))}
        problems = []
        for iid, rel, size in rows:
            path = root / rel if root is not None else None
            if path is None or not path.is_file():
                problems.append(f"instance {iid}: {rel}: file missing")
            elif path.stat().st_size != size:
                problems.append(f"instance {iid}: {rel}: {path.stat().st_size} bytes, the row says {size}")
            elif rel in sums and sha256_of(path) != sums[rel]:
                problems.append(f"instance {iid}: {rel}: checksum differs from the manifest")
        return problems

    return len(rows), await asyncio.to_thread(_check)
