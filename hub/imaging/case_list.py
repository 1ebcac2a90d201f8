"""The case list's read (``GET /api/cases``): one statement per shape of caller, built once.

The list is the console's busiest read. Building its select for every request (columns, the
caller's scope, the filter, the order) cost more than SQLite took to run it, and turning six
timestamps a row into ``datetime`` objects only for them to be written out again as text cost
more still. So the statements are built once per shape (who the caller is, whether a status is
asked for) with the caller's ids, the status and the time as parameters; the timestamps are
read as the answer writes them (:class:`hub.db.types.AnswerTime`); and ``overdue`` is worked
out by the database in the same statement, as :func:`hub.imaging.turnaround.is_overdue` says.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Select, and_, bindparam, or_, select, type_coerce
from sqlalchemy.engine import Connection

from hub.auth import Principal
from hub.db.transactions import row_dicts
from hub.db.types import AnswerTime, UTCDateTime
from hub.imaging.api_models import CaseSummary
from hub.imaging.cases import visible_condition
from hub.imaging.models import Case
from hub.imaging.turnaround import OPEN

LIST_LIMIT = 500

# is_overdue, in SQL: marked overdue by the turnaround check, or open and past its due time
_OVERDUE = or_(Case.overdue_at.is_not(None),
               and_(Case.status.in_(OPEN), Case.due_at.is_not(None), Case.due_at <= bindparam("now")))


def _column(name: str) -> Any:
    if name == "overdue":
        return _OVERDUE.label("overdue")
    col = getattr(Case, name)
    return type_coerce(col, AnswerTime()).label(name) if isinstance(col.type, UTCDateTime) else col


@cache
def _statement(role: str, with_status: bool) -> Select[Any]:
    stmt = select(*(_column(name) for name in CaseSummary.model_fields))
    condition = visible_condition(role)  # the one rule of who sees which cases
    if condition is not None:
        stmt = stmt.where(condition)
    if with_status:
        stmt = stmt.where(Case.status == bindparam("status"))
    return stmt.order_by(Case.id.desc()).limit(LIST_LIMIT)


def case_summary_rows(conn: Connection, principal: Principal, status: str | None,
                      now: datetime) -> list[dict[str, Any]]:
    """The cases ``principal`` may see (as :func:`hub.imaging.cases.visible_cases` says), newest
    first, as :class:`CaseSummary` items ready to be sent as they are."""
    params = {"now": now, "status": status, **principal.tenant_params()}
    items = row_dicts(conn.execute(_statement(principal.role, status is not None), params))
    for item in items:
        item["patient"] = item["patient"] or {}
        item["overdue"] = bool(item["overdue"])
    return items
