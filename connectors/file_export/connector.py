"""The file-export PIMS connector: CSV files dropped in a folder per practice.

A file is taken only when it is complete: names starting with ``.`` or ending in ``.part``,
``.tmp`` or ``.partial`` are being written (write them so, then rename them in), and any other
file must have kept its size for ``stable_seconds``. Files are read in kind order (clients,
patients, reminders, appointments, visits), oldest first, ``batch_size`` rows per batch. Each
batch's checkpoint is ``{"file", "sha256", "row"}``: after a crash the same file resumes after
its last committed row. Once the last batch of a file has committed, the file moves to
``processed/`` (or ``failed/`` when it could not be read at all), with
``<file>.report.csv`` beside it listing every bad row (line, kind, external id, reason).
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import hashlib
import os
import re
import shutil
import time
import zoneinfo
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, TextIO

from pydantic import BaseModel, Field, field_validator

from connectors.file_export.formats import (
    COLUMNS,
    FILE_PREFIXES,
    ID_COLUMN,
    RECORD_CLASSES,
    Parsers,
)
from hub.pims.connector import ConnectorConfig, ConnectorContext, Health
from hub.pims.prepare import prepare_ahead
from hub.pims.records import Batch, Checkpoint, RecordKind, Reject

IN_PROGRESS_SUFFIXES = (".part", ".tmp", ".partial")
REPORT_HEADER = ["line", "kind", "external_id", "reason"]
_BAD_BYTES = re.compile("[\udc80-\udcff]")


class FileExportConfig(ConnectorConfig):
    """``[[practices.pims]]`` keys for ``connector = "file_export"``."""

    drop_dir: Path = Field(description="the practice's drop folder")
    encoding: str = Field("utf-8", description="text encoding of the files; a UTF-8 BOM is always tolerated")
    delimiter: str = Field(",", min_length=1, max_length=1)
    #: per kind (client, patient, reminder, appointment, visit): default column -> file header.
    columns: dict[str, dict[str, str]] = Field(default_factory=dict)
    date_format: str = "%Y-%m-%d"
    stable_seconds: float = Field(5.0, ge=0, description="a file must keep its size this long")
    batch_size: int = Field(1000, ge=1, le=10000)

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown text encoding {value!r}") from None
        return value

    @field_validator("columns")
    @classmethod
    def _known_columns(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for kind, mapping in value.items():
            if kind not in COLUMNS:
                raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(COLUMNS)}")
            known = {c for c, _f, _p in COLUMNS[kind]}
            for column in mapping:
                if column not in known:
                    raise ValueError(f"{kind}: unknown column {column!r}; expected one of {', '.join(sorted(known))}")
        return value


class FileRejected(Exception):
    """The whole file cannot be read (header, encoding)."""


@dataclass
class _Open:
    """A file being read."""

    path: Path
    kind: RecordKind
    sha256: str
    handle: TextIO
    reader: Any
    fields: list[tuple[int, str, Callable[[str], Any]]]  # (index in row, record field, parser)
    width: int
    id_index: int
    #: (index in row, record field) of the plain text cells: read inline, not by a call each
    texts: list[tuple[int, str]] = dataclass_field(default_factory=list)
    #: the other cells' (index in row, record field, parser), in column order
    typed: list[tuple[int, str, Callable[[str], Any]]] = dataclass_field(default_factory=list)

    def __post_init__(self) -> None:
        self.name = self.path.name
        self.texts = [(i, name) for i, name, parse in self.fields if parse.__name__ == "text"]
        self.typed = [(i, name, parse) for i, name, parse in self.fields if parse.__name__ != "text"]


class FileExportConnector:
    """The PIMS connector that syncs a practice's data from CSV export files dropped in a folder."""
    name: ClassVar[str] = "file_export"
    config_model: ClassVar[type[BaseModel]] = FileExportConfig

    def __init__(self, config: FileExportConfig, context: ConnectorContext) -> None:
        self.config = config
        self.context = context
        self.parsers = Parsers(config.date_format, zoneinfo.ZoneInfo(context.practice_timezone))

    @property
    def drop_dir(self) -> Path:
        return self.config.drop_dir

    async def health(self) -> Health:
        d = self.drop_dir
        if not d.is_dir():
            return Health(False, f"drop folder {d} does not exist")
        if not os.access(d, os.R_OK | os.W_OK | os.X_OK):
            return Health(False, f"drop folder {d} is not readable and writable")
        waiting = len(self.ready_files())
        return Health(True, f"{waiting} file(s) waiting in {d}")

    # -- which files -----------------------------------------------------------------------
    def ready_files(self) -> list[tuple[RecordKind, Path]]:
        """Complete files, in the order they are taken."""
        if not self.drop_dir.is_dir():
            return []
        now = time.time()
        found = []
        for path in self.drop_dir.iterdir():
            name = path.name.lower()
            if name.startswith(".") or name.endswith(IN_PROGRESS_SUFFIXES) or not path.is_file():
                continue
            kind = next((k for k, prefix in FILE_PREFIXES.items()
                         if name.startswith(prefix) and name.endswith(".csv")), None)
            if kind is None:
                continue
            stat = path.stat()
            if now - stat.st_mtime < self.config.stable_seconds:
                continue  # still growing, or just renamed in: take it next time
            found.append((list(FILE_PREFIXES).index(kind), stat.st_mtime, path.name, kind, path))
        return [(kind, path) for _o, _m, _n, kind, path in sorted(found)]

    # -- batches ---------------------------------------------------------------------------
    async def batches(self, since: Checkpoint | None, full: bool) -> AsyncIterator[Batch]:
        if not self.drop_dir.is_dir():  # a missing or misspelled folder is a failure, not "nothing new"
            raise FileNotFoundError(f"drop folder {self.drop_dir} does not exist (drop_dir)")
        files = self.ready_files()
        total = sum(path.stat().st_size for _k, path in files) or 1
        done = 0
        for kind, path in files:
            size = path.stat().st_size
            async for batch in self._file(kind, path, since):
                if batch.progress is not None:  # bytes read in this file
                    batch.progress = min((done + batch.progress * size) / total, 1.0)
                yield batch
            done += size

    async def _file(self, kind: RecordKind, path: Path, since: Checkpoint | None) -> AsyncIterator[Batch]:
        sha = await asyncio.to_thread(_sha256, path)
        skip = since["row"] if since and since.get("sha256") == sha else 0
        report = self.drop_dir / ".reports" / f"{path.name}.{sha[:12]}.csv"
        try:
            opened = await asyncio.to_thread(self._open, kind, path, sha)
        except FileRejected as err:
            batch = Batch(checkpoint={"file": path.name, "sha256": sha, "row": 0},
                          rejects=[Reject(kind, f"{path.name}: {err}",
                                          {"file": path.name}, source=path.name)])
            yield batch
            await asyncio.to_thread(self._finish, path, report, batch.rejects, "failed")
            return
        # The next batch is read (in a thread) while the engine applies this one: reading has
        # no side effects; the report and the file's move still wait for the commit.
        pending = asyncio.ensure_future(asyncio.to_thread(self._read, opened, 0, skip))
        try:
            while True:
                batch, row, more = await pending
                if more:
                    pending = asyncio.ensure_future(asyncio.to_thread(self._read, opened, row, skip))
                yield batch
                # The batch has committed: record its bad rows for the file's report.
                await asyncio.to_thread(_append_report, report, batch.rejects)
                if not more:
                    break
        finally:
            # A read may still be running in its thread when the run stops early.
            await asyncio.gather(pending, return_exceptions=True)
            opened.handle.close()
        await asyncio.to_thread(self._finish, path, report, [], "processed")

    def _open(self, kind: RecordKind, path: Path, sha: str) -> _Open:
        handle = open(path, encoding=self.config.encoding, errors="surrogateescape", newline="")
        try:
            reader = csv.reader(handle, delimiter=self.config.delimiter)
            try:
                header = next(reader)
            except StopIteration:
                raise FileRejected("the file is empty (no header row)") from None
            except csv.Error as err:
                raise FileRejected(f"unreadable header: {err}") from None
            header = [h.lstrip("\ufeff").strip().lower() for h in header]
            if any(_BAD_BYTES.search(h) for h in header):
                raise FileRejected(f"header is not valid {self.config.encoding}")
            position = {h: i for i, h in enumerate(header)}
            mapping = self.config.columns.get(kind, {})
            fields = []
            id_index = 0
            for column, field, parser in COLUMNS[kind]:
                wanted = mapping.get(column, column).strip().lower()
                index = position.get(wanted)
                if index is None and column == ID_COLUMN[kind]:
                    raise FileRejected(
                        f"no {wanted!r} column (the {kind} id); the header has: {', '.join(header)}"
                    )
                if column == ID_COLUMN[kind] and index is not None:
                    id_index = index
                if index is not None:  # a missing optional column reads as the field's default
                    fields.append((index, field, getattr(self.parsers, parser)))
            return _Open(path, kind, sha, handle, reader, fields, len(header), id_index)
        except BaseException:
            handle.close()
            raise

    def _read(self, f: _Open, row: int, skip: int) -> tuple[Batch, int, bool]:
        """Read up to batch_size rows after ``row``; return the batch, the new row count and
        whether more rows may follow."""
        batch = Batch(checkpoint={})
        records = getattr(batch, f"{f.kind}s")
        make = RECORD_CLASSES[f.kind]
        taken = 0
        more = True
        while taken < self.config.batch_size:
            try:
                cells = next(f.reader)
            except StopIteration:
                more = False
                break
            except csv.Error as err:
                row += 1
                taken += 1
                batch.rejects.append(Reject(f.kind, f"line {f.reader.line_num}: unreadable CSV: {err}",
                                            {"file": f.path.name, "line": f.reader.line_num},
                                            source=f"{f.path.name}:{f.reader.line_num}"))
                continue
            row += 1
            if row <= skip:
                continue
            taken += 1
            joined = "".join(cells)
            if not joined.strip():
                continue  # blank line
            line = f.reader.line_num
            raw = {"file": f.name, "line": line, "row": tuple(cells)}
            if len(cells) != f.width or not joined.isascii() and _BAD_BYTES.search(joined):
                batch.rejects.append(self._bad_row(f, cells, raw))
                continue
            # Parsers.text inline: a blank cell is None, any other as it is.
            values = {field: cell if (cell := cells[i]).strip() else None for i, field in f.texts}
            try:
                for i, field, parse in f.typed:
                    values[field] = parse(cells[i])
            except ValueError as err:
                ext = cells[f.id_index].strip()
                batch.rejects.append(Reject(f.kind, f"line {line}: {err}", raw, ext or None,
                                            f"{f.path.name}:{line}"))
                continue
            values["external_id"] = values.get("external_id") or ""
            values["raw"] = raw
            records.append(make(**values))
        batch.checkpoint = {"file": f.path.name, "sha256": f.sha256, "row": max(row, skip)}
        size = os.fstat(f.handle.fileno()).st_size or 1
        batch.progress = 1.0 if not more else min(f.handle.buffer.tell() / size, 1.0)
        # In this thread, while the engine applies the previous batch.
        prepare_ahead(batch)
        return batch, row, more

    def _bad_row(self, f: _Open, cells: list[str], raw: dict[str, Any]) -> Reject:
        """The reject of a row of the wrong width or with bytes the encoding cannot read."""
        line = raw["line"]
        ext = cells[f.id_index].strip() if len(cells) > f.id_index else None
        where = f"{f.path.name}:{line}"
        if len(cells) != f.width:
            return Reject(f.kind, f"line {line}: expected {f.width} fields, got {len(cells)} "
                          "(truncated or misquoted row)", raw, ext or None, where)
        raw["row"] = [c.encode(self.config.encoding, "surrogateescape").decode("latin-1")
                      for c in cells]
        return Reject(f.kind, f"line {line}: not valid {self.config.encoding} text "
                      "(wrong encoding declared?)", raw, ext or None, where)

    def _finish(self, path: Path, report: Path, extra: list[Reject], where: str) -> None:
        if extra:
            _append_report(report, extra)
        target = self.drop_dir / where
        target.mkdir(exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        moved = target / f"{stamp}-{path.name}"
        shutil.move(path, moved)
        if report.exists():
            shutil.move(report, target / f"{moved.name}.report.csv")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _append_report(report: Path, rejects: list[Reject]) -> None:
    if not rejects:
        return
    report.parent.mkdir(exist_ok=True)
    new = not report.exists()
    with open(report, "a", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        if new:
            writer.writerow(REPORT_HEADER)
        for r in rejects:
            line = r.raw.get("line", "") if isinstance(r.raw, dict) else ""
            writer.writerow([line, r.kind, r.external_id or "", r.reason])
