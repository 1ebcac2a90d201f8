"""The driver-level upsert (hub.pims.bulk) stores exactly what SQLAlchemy's own INSERT stores:
the same text, numbers and types on SQLite, the same values on PostgreSQL, for every synced
table, on insert and on update."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from hub.db.models import Practice
from hub.db.transactions import run_transaction
from hub.pims.bulk import bulk_table, stored_hashes, upsert
from hub.pims.prepare import _COLUMNS, KINDS

CHICAGO = ZoneInfo("America/Chicago")
NOW = datetime(2026, 12, 7, 9, 30, 1, 250_000, tzinfo=UTC)
TIMES = [datetime(2026, 3, 8, 1, 59, 59, 999_999, tzinfo=CHICAGO), datetime(2026, 1, 1, tzinfo=UTC),
         datetime(1999, 12, 31, 23, 0, tzinfo=ZoneInfo("Pacific/Auckland")), None]
DATES = [date(2019, 2, 28), date(1, 1, 1), date(2026, 12, 31), None]
AMOUNTS = [Decimal("427.66"), Decimal("0.00"), Decimal("-12.5"), Decimal("9999999999.99"),
           Decimal("0.005"), None]
FLAGS = [True, False, None]
TEXTS = ["Siobhán O'Brien", "Zoë ?, $1 :x %s", "plain", None]


def _value(column: str, i: int) -> Any:
    """A value of each shape the column can hold, varied by row."""
    if column == "external_id":
        return f"X{i:04d}"
    if column == "content_hash":
        return f"{i:032x}"
    if column in ("modified_at", "start_at", "visited_at"):
        return TIMES[i % len(TIMES)]
    if column in ("birth_date", "due_date"):
        return DATES[i % len(DATES)]
    if column == "balance":
        return AMOUNTS[i % len(AMOUNTS)]
    if column == "comms_disabled":
        return FLAGS[i % len(FLAGS)]
    if column in ("status", "email_status", "pet_app_status"):
        return ["active", "inactive", "unverified"][i % 3]
    return TEXTS[i % len(TEXTS)]


def _rows(kind: str, n: int, shift: int = 0) -> list[tuple[Any, ...]]:
    return [tuple(_value(c, i if c == "external_id" else i + shift) for c in _COLUMNS[kind])
            for i in range(n)]


def _stored(conn: Connection, kind: str, practice_id: int) -> list[tuple[Any, ...]]:
    """The rows as the database holds them: on SQLite each value with its storage class (no
    result processing), on PostgreSQL as text."""
    table = KINDS[kind][1]
    columns = [*_COLUMNS[kind], "synced_at"]
    if conn.dialect.name == "sqlite":
        what = ", ".join(f"{c}, typeof({c})" for c in columns)
        sql = f"SELECT {what} FROM {table.name} WHERE practice_id = ? ORDER BY external_id"
    else:
        what = ", ".join(f"{c}::text" for c in columns)
        sql = f"SELECT {what} FROM {table.name} WHERE practice_id = $1 ORDER BY external_id"
    return [tuple(r) for r in conn.exec_driver_sql(sql, (practice_id,)).all()]


def _sqlalchemy_insert(conn: Connection, kind: str, practice_id: int, rows: list[tuple[Any, ...]]) -> None:
    conn.execute(insert(KINDS[kind][1]), [
        {**dict(zip(_COLUMNS[kind], row, strict=True)), "practice_id": practice_id, "synced_at": NOW}
        for row in rows])


async def test_bulk_upsert_stores_what_sqlalchemy_stores(hub_factory: Any) -> None:
    hub = await hub_factory({"practices": [{"slug": s, "name": s, "country": "US"}
                                           for s in ("reference", "bulk", "changed")]})
    async with hub.sessionmaker() as s:
        ids = {slug: i for slug, i in (await s.execute(select(Practice.slug, Practice.id))).all()}
    reference, bulk, changed = ids["reference"], ids["bulk"], ids["changed"]

    def write(conn: Connection) -> None:
        for kind, (_a, table, _c) in KINDS.items():
            b = bulk_table(conn.dialect, table, _COLUMNS[kind])
            rows = _rows(kind, 24)
            _sqlalchemy_insert(conn, kind, reference, rows)
            written = upsert(conn, b, bulk, NOW, rows)
            assert sorted(x for _i, x, _n in written) == [r[0] for r in rows]
            assert {n for _i, _x, n in written} == ({True} if conn.dialect.name == "postgresql" else {None})
            assert _stored(conn, kind, bulk) == _stored(conn, kind, reference), kind
            assert stored_hashes(conn, b, bulk, [r[0] for r in rows] + ["missing"]) == {
                r[0]: r[-1] for r in rows}
            # The same rows again change nothing; every other row changed is updated in place
            # to what SQLAlchemy would have inserted.
            assert upsert(conn, b, bulk, NOW + timedelta(hours=1), rows) == []
            moved = [r if i % 2 else _rows(kind, 24, shift=1)[i] for i, r in enumerate(rows)]
            written = upsert(conn, b, bulk, NOW, moved)
            expected = {r[0] for r, m in zip(rows, moved, strict=True) if r != m}
            assert {x for _i, x, _n in written} == expected, kind
            assert {n for _i, _x, n in written} <= {False, None}
            _sqlalchemy_insert(conn, kind, changed, moved)
            assert _stored(conn, kind, bulk) == _stored(conn, kind, changed), kind

    await run_transaction(hub.engine, write)
