"""A batch's synced rows written through the driver: the stored-hash lookup, the upsert and
the re-hash of rows whose values did not change.

SQLAlchemy's executemany runs every parameter of every row through Python (``construct_params``
and the bind processors of the date, time, amount and flag columns): at 1,000 rows of 24
columns that cost more than the database's own work of storing them. Here a row is a tuple in
:attr:`BulkTable.columns` order; the columns that have a bind processor go through the very
processor SQLAlchemy would call (so the stored values are the same: SQLite's date and time
text, its float amounts, PostgreSQL's ``timestamptz``), a column at a time, and each statement
is one ``exec_driver_sql``:

- SQLite: ``INSERT … VALUES (…), (…) … ON CONFLICT DO UPDATE … RETURNING``, up to 1,000 rows a
  statement (SQLAlchemy's own "insertmanyvalues" sends the same statement);
- PostgreSQL: ``INSERT … SELECT … FROM unnest($3, $4, …) ON CONFLICT DO UPDATE … RETURNING``,
  one array parameter per column, so one prepared statement whatever the batch's size.

The statement is the one :mod:`hub.pims.sync` always ran: only rows whose values differ are
updated, and it returns the id and external id of every row inserted or changed (and on
PostgreSQL whether it was inserted).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from itertools import chain, repeat
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.types import TypeDecorator

#: SQLite's limit on a statement's parameters since 3.32 (SQLAlchemy assumes it too).
SQLITE_MAX_PARAMETERS = 32766
#: rows per SQLite statement, as SQLAlchemy's insertmanyvalues pages them
SQLITE_ROWS_PER_STATEMENT = 1000
#: columns the engine sets itself; every other column of a row comes from its record
CONSTANTS = ("practice_id", "synced_at")
_KEY = ("practice_id", "external_id")
_PG_ARRAY = {str: "varchar", Decimal: "numeric", bool: "boolean", datetime: "timestamptz",
             date: "date", int: "integer"}


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
    # What SQLAlchemy calls for a parameter of this column on this dialect.
    column_type = table.c[name].type
    processor: Callable[[Any], Any] | None = column_type.dialect_impl(dialect).bind_processor(dialect)
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
    into = f"INSERT INTO {name} ({', '.join(map(quote, [*CONSTANTS, *columns]))}) "
    ext = quote("external_id")
    if dialect.name == "postgresql":
        arrays = ", ".join(f"${i}::{_pg_array(table, c)}[]" for i, c in enumerate(columns, start=3))
        head = f"{into}SELECT $1::integer, $2::timestamptz, u.* FROM unnest({arrays}) AS u"
        tail = f"{conflict} RETURNING {name}.id, {name}.{ext}, (xmax = 0)"
        lookup = (f"SELECT {ext}, content_hash FROM {name} "
                  f"WHERE practice_id = $1 AND {ext} = ANY($2::varchar[])")
        rehash = (f"UPDATE {name} SET content_hash = u.h FROM unnest($2::varchar[], $3::varchar[]) "
                  f"AS u(x, h) WHERE {name}.practice_id = $1 AND {name}.{ext} = u.x")
    else:
        head = f"{into}VALUES "
        tail = f"{conflict} RETURNING id, {ext}"
        lookup = f"SELECT {ext}, content_hash FROM {name} WHERE practice_id = ? AND {ext} IN "
        rehash = f"UPDATE {name} SET content_hash = ? WHERE practice_id = ? AND {ext} = ?"
    processors = tuple((i, p) for i, c in enumerate(columns)
                       if (p := _processor(dialect, table, c)) is not None)
    constant_processors = tuple(_processor(dialect, table, c) for c in CONSTANTS)
    return BulkTable(table, dialect.name, columns, processors, constant_processors, head, tail,
                     lookup, rehash)


def _pg_array(table: Table, name: str) -> str:
    # Unbounded element types: a text longer than its column fails on assignment, as a bound
    # parameter would, where a cast to varchar(n) would cut it short silently.
    column_type = table.c[name].type
    if isinstance(column_type, TypeDecorator):
        column_type = column_type.impl_instance
    python_type = column_type.python_type
    if python_type not in _PG_ARRAY:
        raise TypeError(f"{table.name}.{name}: no array type for {python_type.__name__}")
    return _PG_ARRAY[python_type]


@functools.lru_cache(maxsize=32)
def _placeholders(width: int, rows: int) -> str:
    """``(?, ?, …), (?, ?, …)…``; cached, so a statement's text is the same ``str`` each time
    and sqlite3's statement cache finds it without comparing 100 kB."""
    row = "(" + ", ".join(["?"] * width) + ")"
    return ", ".join([row] * rows)


def _sqlite_page(width: int) -> int:
    return max(1, min(SQLITE_ROWS_PER_STATEMENT, SQLITE_MAX_PARAMETERS // width))


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
        page = SQLITE_MAX_PARAMETERS - 1
        for start in range(0, len(external_ids), page):
            ids = external_ids[start:start + page]
            sql = f"{bulk.lookup_sql}({_placeholders(len(ids), 1)[1:-1]})"
            found += conn.exec_driver_sql(sql, (practice_id, *ids)).all()
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
    if bulk.dialect == "postgresql":
        returned = conn.exec_driver_sql(bulk.upsert_head + bulk.upsert_tail,
                                        (*constants, *columns)).all()
        return [(r[0], r[1], bool(r[2])) for r in returned]
    n = len(rows)
    # Each row's parameters in order: practice_id, synced_at, then its columns.
    flat = list(chain.from_iterable(zip(repeat(constants[0], n), repeat(constants[1], n), *columns,
                                          strict=True)))
    width = len(bulk.columns) + len(CONSTANTS)
    page = _sqlite_page(width)
    out: list[tuple[int, str, bool | None]] = []
    for start in range(0, n, page):
        count = min(page, n - start)
        sql = bulk.upsert_head + _placeholders(width, count) + bulk.upsert_tail
        returned = conn.exec_driver_sql(sql, tuple(flat[start * width:(start + count) * width])).all()
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
