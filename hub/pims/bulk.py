"""A batch's synced rows written through the driver: the stored-hash lookup, the upsert and
the re-hash of rows whose values did not change.

SQLAlchemy's executemany runs every parameter of every row through Python (``construct_params``
and the bind processors of the date, time, amount and flag columns): at 1,000 rows of 24
columns that cost more than the database's own work of storing them. Here a row is a tuple in
:attr:`BulkTable.columns` order; the columns that have a bind processor go through the very
processor SQLAlchemy would call (so the stored values are the same: SQLite's date and time
text, its float amounts, PostgreSQL's ``timestamptz``), a column at a time, and each page of
up to 1,000 rows is one ``exec_driver_sql`` of a multi-row ``INSERT … VALUES (…), (…) … ON
CONFLICT DO UPDATE … RETURNING`` (the statement SQLAlchemy's own "insertmanyvalues" sends),
on PostgreSQL its parameters numbered so that practice_id and synced_at are bound once
(``$1``, ``$2``). On PostgreSQL an ``unnest`` of one array per column would make one statement
of any size, but asyncpg checks every element of an array against three abstract base
classes as it encodes it, which costs more than the rest of the upsert's Python.

The statement is the one :mod:`hub.pims.sync` always ran: only rows whose values differ are
updated, and it returns the id and external id of every row inserted or changed (and on
PostgreSQL whether it was inserted).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from itertools import chain, repeat
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Connection, Dialect

#: the most parameters a statement may have: SQLite's limit since 3.32 (SQLAlchemy assumes it
#: too); PostgreSQL's is 32767.
MAX_PARAMETERS = 32766
#: rows per statement, as SQLAlchemy's insertmanyvalues pages them
ROWS_PER_STATEMENT = 1000
#: columns the engine sets itself; every other column of a row comes from its record
CONSTANTS = ("practice_id", "synced_at")
_KEY = ("practice_id", "external_id")


@dataclass(frozen=True)
class BulkTable:
    """One table's statements and bind processors for one dialect.

    A row is a tuple of :attr:`columns`; ``practice_id`` and ``synced_at`` are the same for
    every row of a batch and are passed apart.
    """

    table: Table
    dialect: str
    columns: tuple[str, ...]
    #: (index in a row, processor) of the columns SQLAlchemy would process
    processors: tuple[tuple[int, Callable[[Any], Any]], ...]
    #: the processors of practice_id and synced_at (or None)
    constant_processors: tuple[Callable[[Any], Any] | None, ...]
    upsert_head: str
    upsert_tail: str
    #: rows per upsert statement, within MAX_PARAMETERS
    page: int
    lookup_sql: str
    rehash_sql: str

    def process(self, rows: Sequence[tuple[Any, ...]]) -> list[Sequence[Any]]:
        """The rows' values column by column, each through its bind processor."""
        columns: list[Sequence[Any]] = list(zip(*rows, strict=True))
        for index, processor in self.processors:
            columns[index] = list(map(processor, columns[index]))
        return columns

    def constants(self, practice_id: int, synced_at: datetime) -> tuple[Any, Any]:
        p, s = self.constant_processors
        return (p(practice_id) if p else practice_id, s(synced_at) if s else synced_at)


_CACHE: dict[tuple[str, str, str, tuple[str, ...]], BulkTable] = {}


def bulk_table(dialect: Dialect, table: Table, columns: tuple[str, ...]) -> BulkTable:
    """The statements for ``table`` and rows of ``columns`` (which hold ``external_id`` and
    none of :data:`CONSTANTS`) on ``dialect``; built once per dialect."""
    key = (dialect.name, dialect.driver, table.name, columns)
    found = _CACHE.get(key)
    if found is None:
        found = _CACHE[key] = _build(dialect, table, columns)
    return found


def _processor(dialect: Dialect, table: Table, name: str) -> Callable[[Any], Any] | None:
    """What SQLAlchemy calls for a parameter of this column on this dialect; on SQLite, for
    dates and UTC times, a quicker function giving the same text (see _quick_text)."""
    column_type = table.c[name].type
    processor: Callable[[Any], Any] | None = column_type.dialect_impl(dialect).bind_processor(dialect)
    if processor is not None and dialect.name == "sqlite":
        return _quick_text(processor)
    return processor


#: values each shortcut of _quick_text must turn into SQLAlchemy's text before it is used
_DATETIMES = (datetime(2026, 3, 8, 1, 59, 59, 999_999, tzinfo=UTC), datetime(1, 1, 1, tzinfo=UTC),
              datetime(2026, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=13, minutes=45))))
_DATES = (date(2026, 2, 28), date(1, 1, 1), date(9999, 12, 31))


def _utc_text(value: datetime) -> str:
    # What a UTCDateTime column stores on SQLite: UTC, without the zone, with microseconds.
    return value.astimezone(UTC).isoformat(" ", "microseconds")[:26]


def _quick_text(processor: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``processor`` (SQLAlchemy's, for a column of SQLite) without its Python layers for the
    values that are most of a sync: an aware ``datetime`` of a UTCDateTime column, and a
    ``date`` of a Date column, become the same text through ``isoformat``; anything else goes
    to ``processor``. Each shortcut is taken only for a column whose processor gives its text
    for every probe (_DATETIMES, _DATES); a column for which neither holds keeps
    ``processor``."""
    def agrees(probes: tuple[Any, ...], shortcut: Callable[[Any], str]) -> bool:
        try:
            return all(processor(p) == shortcut(p) for p in probes)
        except (TypeError, ValueError, AttributeError):
            return False

    if agrees(_DATETIMES, _utc_text):
        def quick_datetime(value: Any) -> Any:
            if type(value) is datetime and value.tzinfo is not None:
                return _utc_text(value)
            return processor(value)
        return quick_datetime
    if agrees(_DATES, date.isoformat):
        def quick_date(value: Any) -> Any:
            return value.isoformat() if type(value) is date else processor(value)
        return quick_date
    return processor


def _build(dialect: Dialect, table: Table, columns: tuple[str, ...]) -> BulkTable:
    quote = dialect.identifier_preparer.quote
    name = dialect.identifier_preparer.format_table(table)
    compared = [c for c in columns if c not in (*_KEY, "content_hash")]
    distinct = "IS DISTINCT FROM" if dialect.name == "postgresql" else "IS NOT"
    conflict = (
        f" ON CONFLICT ({', '.join(map(quote, _KEY))}) DO UPDATE SET "
        + ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in [*compared, "synced_at", "content_hash"])
        + " WHERE " + " OR ".join(f"{name}.{quote(c)} {distinct} excluded.{quote(c)}" for c in compared)
    )
    ext = quote("external_id")
    head = f"INSERT INTO {name} ({', '.join(map(quote, [*CONSTANTS, *columns]))}) VALUES "
    if dialect.name == "postgresql":
        tail = f"{conflict} RETURNING {name}.id, {name}.{ext}, (xmax = 0)"
        lookup = (f"SELECT {ext}, content_hash FROM {name} "
                  f"WHERE practice_id = $1 AND {ext} = ANY($2::varchar[])")
        rehash = (f"UPDATE {name} SET content_hash = u.h FROM unnest($2::varchar[], $3::varchar[]) "
                  f"AS u(x, h) WHERE {name}.practice_id = $1 AND {name}.{ext} = u.x")
    else:
        tail = f"{conflict} RETURNING id, {ext}"
        lookup = f"SELECT {ext}, content_hash FROM {name} WHERE practice_id = ? AND {ext} IN "
        rehash = f"UPDATE {name} SET content_hash = ? WHERE practice_id = ? AND {ext} = ?"
    processors = tuple((i, p) for i, c in enumerate(columns)
                       if (p := _processor(dialect, table, c)) is not None)
    constant_processors = tuple(_processor(dialect, table, c) for c in CONSTANTS)
    page = max(1, min(ROWS_PER_STATEMENT, MAX_PARAMETERS // (len(columns) + len(CONSTANTS))))
    return BulkTable(table, dialect.name, columns, processors, constant_processors, head, tail,
                     page, lookup, rehash)


@functools.lru_cache(maxsize=32)
def _values(dialect: str, width: int, rows: int) -> str:
    """The VALUES of ``rows`` rows of the batch's constants and ``width`` own parameters:
    ``($1, $2, $3, …), ($1, $2, $27, …)…`` on PostgreSQL; ``(?, ?, ?, …), …`` on SQLite,
    whose parser looks each numbered parameter up in a list (a first statement of 1,000
    numbered rows took a second to prepare). Cached, so a statement's text is the same
    ``str`` each time and the driver's statement cache finds it without comparing 100 kB."""
    if dialect != "postgresql":
        return ", ".join(["(" + ", ".join(["?"] * (len(CONSTANTS) + width)) + ")"] * rows)
    constants = [f"${i}" for i in range(1, len(CONSTANTS) + 1)]
    own = iter(range(len(CONSTANTS) + 1, len(CONSTANTS) + width * rows + 1))
    return ", ".join("(" + ", ".join([*constants, *(f"${next(own)}" for _ in range(width))]) + ")"
                     for _ in range(rows))


@functools.lru_cache(maxsize=32)
def _in_list(count: int) -> str:
    return "(" + ", ".join(["?"] * count) + ")"


def stored_hashes(conn: Connection, bulk: BulkTable, practice_id: int,
                  external_ids: list[str]) -> dict[str, str | None]:
    """external id -> content hash of the rows among ``external_ids`` that exist."""
    if not external_ids:
        return {}
    found: list[Any] = []
    if bulk.dialect == "postgresql":
        # A generic plan made while a first sync's table was still nearly empty (a scan of
        # the practice) would be kept as the table grows — never analysed mid-sync — and each
        # batch's lookup would then read every row synced so far: quadratic. A custom plan
        # sees the array and the table as they are now and takes the unique index.
        conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
        found += conn.exec_driver_sql(bulk.lookup_sql, (practice_id, external_ids)).all()
    else:
        page = MAX_PARAMETERS - 1
        for start in range(0, len(external_ids), page):
            ids = external_ids[start:start + page]
            found += conn.exec_driver_sql(bulk.lookup_sql + _in_list(len(ids)), (practice_id, *ids)).all()
    return {external_id: digest for external_id, digest in found}


def upsert(conn: Connection, bulk: BulkTable, practice_id: int, synced_at: datetime,
           rows: Sequence[tuple[Any, ...]]) -> list[tuple[int, str, bool | None]]:
    """Insert or update ``rows`` (distinct external ids of one practice) by (practice_id,
    external_id), touching only rows whose values differ; return (id, external id, inserted)
    of every row inserted or changed. ``inserted`` is None on SQLite, which cannot tell: the
    caller knows from the stored hashes it read under SQLite's write lock."""
    if not rows:
        return []
    constants = bulk.constants(practice_id, synced_at)
    columns = bulk.process(rows)
    postgresql = bulk.dialect == "postgresql"
    prefix: tuple[Any, ...]
    if postgresql:  # each row's own parameters, after the constants
        prefix, width = constants, len(columns)
        params = list(chain.from_iterable(zip(*columns, strict=True)))
    else:  # each row's parameters, the constants first
        prefix, width, n = (), len(columns) + len(CONSTANTS), len(rows)
        params = list(chain.from_iterable(zip(repeat(constants[0], n), repeat(constants[1], n),
                                              *columns, strict=True)))
    out: list[tuple[int, str, bool | None]] = []
    for start in range(0, len(rows), bulk.page):
        count = min(bulk.page, len(rows) - start)
        sql = bulk.upsert_head + _values(bulk.dialect, len(columns), count) + bulk.upsert_tail
        returned = conn.exec_driver_sql(
            sql, (*prefix, *params[start * width:(start + count) * width])).all()
        if postgresql:
            out += [(r[0], r[1], bool(r[2])) for r in returned]
        else:
            out += [(r[0], r[1], None) for r in returned]
    return out


def rehash(conn: Connection, bulk: BulkTable, practice_id: int,
           hashes: list[tuple[str, str]]) -> None:
    """Set the content hash of the rows of (external id, hash) ``hashes``."""
    if not hashes:
        return
    if bulk.dialect == "postgresql":
        external_ids, digests = zip(*hashes, strict=True)
        conn.exec_driver_sql(bulk.rehash_sql, (practice_id, list(external_ids), list(digests)))
    else:
        conn.exec_driver_sql(bulk.rehash_sql, [(h, practice_id, x) for x, h in hashes])
