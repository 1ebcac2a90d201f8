"""Finding clients and patients: by name prefix, email, phone or PIMS id, a page at a time.

Every form of the query is answered from an index (see the indexes on
:class:`hub.pims.models.Client`): a name is folded into a search key and looked up as one
range of ``name_key`` ("first last") or ``surname_key`` ("last first") — ``key >= q`` and
``key < q + "~"``, since keys hold only ``[a-z0-9 ]`` — read in phases (:data:`NAME_PHASES`:
the exact PIMS id, surnames, then first names), each an ordered range read only as far as the
page needs, all of a page's phases in one statement; an email as a range of ``email_key``,
a phone as its E.164 form on each phone column, and the text as it is on the PIMS id. The
scope is always ``practice_id IN (...)``, the leading column of each index.

Pages are cursor-based: the cursor carries the last row's sort key, never an offset.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Integer,
    Select,
    and_,
    any_,
    bindparam,
    case,
    false,
    func,
    literal,
    literal_column,
    or_,
    select,
    true,
    tuple_,
    union_all,
)
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, aliased

from hub.db.models import Practice
from hub.errors import Invalid
from hub.pims.models import Client, Patient
from hub.pims.normalise import normalise_phone, search_key
from hub.pims.records import ClientStatus, PatientStatus

#: above every character a search key holds, so ``key < prefix + KEY_END`` ends a prefix range
KEY_END = "~"
_PHONE_CHARS = re.compile(r"^[+\d\s().\-]+$")


@dataclass(frozen=True)
class Page:
    """A page of results and the opaque cursor that fetches the next one (None on the last page)."""
    items: list[Any]
    next_cursor: str | None


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, size: int) -> list[Any] | None:
    if not cursor:
        return None
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, UnicodeDecodeError):
        values = None
    if not isinstance(values, list) or len(values) != size:
        raise Invalid("the cursor is not one this list gave out", code="invalid_cursor",
                      field="cursor")
    return values


def prefix(column: Any, key: str) -> ColumnElement[bool]:
    return and_(column >= key, column < key + KEY_END)


#: the country phones are read in, or how to find it (looked up only when a query reads as a
#: phone number: a name or an address never needs it)
Region = str | Callable[[], str]


def phone_key(text: str, region: Region) -> str | None:
    """``text`` in E.164 when it reads as a phone number in ``region``, else None."""
    digits = sum(ch.isdigit() for ch in text)
    if digits < 7 or not _PHONE_CHARS.match(text.strip()):
        return None
    try:
        return normalise_phone(text.strip(), region if isinstance(region, str) else region())
    except ValueError:
        return None


def client_terms(q: str, region: Region) -> tuple[list[ColumnElement[bool]], bool]:
    """The indexed conditions ``q`` may mean (OR-ed), or ``([], True)`` when it reads as a
    name (searched in phases: :func:`_name_search`)."""
    text = q.strip()
    terms: list[ColumnElement[bool]] = [Client.external_id == text[:64]]
    if "@" in text:
        return [*terms, prefix(Client.email_key, text.lower())], False
    phone = phone_key(text, region)
    if phone is not None:
        return [*terms, Client.phone_mobile == phone, Client.phone_home == phone,
                Client.phone_work == phone], False
    if search_key(text):
        return [], True
    return terms, False


#: a name search's phases, in page order: the exact PIMS id, then surnames from the prefix
#: (A–Z), then first names from it (A–Z) — each one ordered index range read up to a page,
#: never a sort of every match (a two-letter prefix can match a tenth of a practice)
NAME_PHASES = ("pims_id", "surname", "name")
#: the key each phase after the first is ordered by (then the id), which its cursor carries
_PHASE_SORT = {"surname": Client.surname_key, "name": Client.name_key}


def _sort_key(phase: str, client: Any) -> str:
    return getattr(client, _PHASE_SORT[phase].key) if phase in _PHASE_SORT else ""


class PracticeArray(list[int]):
    """Practice ids sent to PostgreSQL as one array parameter (``practice_id = ANY(:ids)``)
    rather than an ``IN`` list of one parameter each: the same plan, without SQLAlchemy
    expanding the list into the statement for every request (a sixth of the search's CPU)."""


#: ``practice_ids`` of the client search: the practices in scope (a :class:`PracticeArray` on
#: PostgreSQL), or None for every practice (an operator on SQLite: the scope is then a subquery
#: rather than a list of every id; see :func:`hub.clients.scope.search_scope_on`)
Scope = list[int] | None


def _scope_kind(practice_ids: Scope) -> str:
    if practice_ids is None:
        return "all"
    if not practice_ids:
        return "none"
    return "array" if isinstance(practice_ids, PracticeArray) else "list"


def _scope(kind: str) -> ColumnElement[bool]:
    """The scope of a statement built once per shape; its ids are the ``scope_ids`` parameter."""
    if kind == "all":
        # still "practice_id IN (...)": every index on clients leads with practice_id
        return Client.practice_id.in_(select(Practice.id))
    if kind == "none":
        return false()
    if kind == "array":
        return Client.practice_id == any_(bindparam("scope_ids", type_=ARRAY(Integer)))
    return Client.practice_id.in_(bindparam("scope_ids", expanding=True))


def _scope_params(practice_ids: Scope) -> dict[str, Any]:
    return {"scope_ids": list(practice_ids)} if practice_ids else {}


def _for(dialect_name: str, practice_ids: Scope) -> Scope:
    return PracticeArray(practice_ids) if practice_ids and dialect_name == "postgresql" else practice_ids


#: the filters a page may carry: (status given, has_email) — part of a statement's shape, the
#: status itself its ``status`` parameter
Filters = tuple[bool, bool | None]


def _filters(stmt: Select[*tuple[Any, ...]], filters: Filters) -> Select[*tuple[Any, ...]]:
    by_status, has_email = filters
    if by_status:
        stmt = stmt.where(Client.status == bindparam("status"))
    if has_email is not None:
        stmt = stmt.where(Client.email.is_not(None) if has_email else Client.email.is_(None))
    return stmt


def _filter_params(status: str | None) -> dict[str, Any]:
    return {"status": status} if status is not None else {}


def _key_range(column: Any) -> ColumnElement[bool]:
    return and_(column >= bindparam("key"), column < bindparam("key_end"))


def _name_arm(scope: str, phase: str, resume: bool, filters: Filters) -> Select[*tuple[Any, ...]]:
    """One phase of a name search (see :data:`NAME_PHASES`) as one ordered index range read up
    to ``arm_limit`` rows, after (``after_sort``, ``after_id``) when it resumes a cursor; each
    row carries its phase's place in the page (``phase``)."""
    where = [_scope(scope)]
    if phase == "pims_id":
        where.append(Client.external_id == bindparam("pims"))
        if resume:
            where.append(Client.id > bindparam("after_id"))
        order: tuple[Any, ...] = (Client.id,)
    else:
        sort = _PHASE_SORT[phase]
        where += [_key_range(sort), Client.external_id != bindparam("pims")]
        if phase == "name":  # what the surname phase did not list already
            where.append(~_key_range(Client.surname_key))
        if resume:
            where.append(tuple_(sort, Client.id) > tuple_(bindparam("after_sort"), bindparam("after_id")))
        order = (sort, Client.id)
    stmt = select(Client, literal_column(str(NAME_PHASES.index(phase)), Integer).label("phase"))
    return _filters(stmt.where(*where), filters).order_by(*order).limit(bindparam("arm_limit", type_=Integer))


def _active_owner(practice_id: Any, external_id: Any) -> ColumnElement[bool]:
    """Whether the client of a row owns an active patient: one probe of the patients' index.

    A scalar subquery with LIMIT 1, not EXISTS: PostgreSQL may turn an EXISTS in the select
    list into a hash of every active patient (chosen by its estimates, at a few thousand
    patients already), where a scalar subquery stays one index probe per row."""
    probe = (select(true()).where(Patient.practice_id == practice_id,
                                  Patient.client_external_id == external_id,
                                  Patient.status == PatientStatus.ACTIVE)
             .limit(1).scalar_subquery())
    return func.coalesce(probe, false())


@functools.lru_cache(maxsize=256)
def _name_search(start: int, resume: bool, scope: str, filters: Filters, rows: bool) -> Select[Any]:
    """A page of a name search from phase ``start`` on, in one statement built once per shape:
    the phases' ranges as arms of a UNION ALL, each read only up to the page, then put in page
    order (at most a page per arm to sort). One round trip instead of one per phase.

    ``rows``: plain rows of :data:`ROW_COLUMNS` plus ``owner`` (whether the client owns an
    active patient, so the page needs no second statement); else whole :class:`Client`\\ s."""
    arms = [_name_arm(scope, phase, resume and i == start, filters).subquery(f"phase_{i}")
            for i, phase in enumerate(NAME_PHASES) if i >= start]
    found = union_all(*(select(*arm.c) for arm in arms)).subquery("found")
    # within each phase the order its arm read (the cursor's): the PIMS id's by id
    sort = case(*((found.c.phase == NAME_PHASES.index(p), found.c[c.key]) for p, c in _PHASE_SORT.items()),
                else_=literal(""))
    if rows:
        cols = [found.c[c.name] for c in ROW_COLUMNS]
        owner = _active_owner(found.c.practice_id, found.c.external_id).label("owner")
        stmt = select(*cols, found.c.phase, owner)
    else:
        stmt = select(aliased(Client, found), found.c.phase)
    return stmt.order_by(found.c.phase, sort, found.c.id).limit(bindparam("page_limit", type_=Integer))


def _name_params(text: str, key: str, after: list[Any] | None, limit: int) -> dict[str, Any]:
    params = {"pims": text[:64], "key": key, "key_end": key + KEY_END, "arm_limit": limit + 1,
              "page_limit": limit + 1}
    if after is not None:
        params |= {"after_sort": after[1], "after_id": after[2]}
    return params


def name_phase_query(practice_ids: list[int], text: str, phase: str, limit: int) -> Select[Any]:
    """One phase of a name search from its start, with its values bound (to EXPLAIN it)."""
    stmt = _name_arm(_scope_kind(practice_ids), phase, False, (False, None))
    return stmt.params(**_scope_params(practice_ids),
                       **_name_params(text, search_key(text), None, limit))


def name_search_query(practice_ids: list[int], text: str, limit: int) -> Select[Any]:
    """The first page of a name search as the API reads it, with its values bound (to EXPLAIN it)."""
    stmt = _name_search(0, False, _scope_kind(practice_ids), (False, None), True)
    return stmt.params(**_scope_params(practice_ids),
                       **_name_params(text, search_key(text), None, limit))


def _terms_query(scope: str, terms: list[ColumnElement[bool]], filters: Filters,
                 resume: bool) -> Select[Any]:
    where = _scope(scope)
    # the scope inside each arm: every index leads with practice_id, and neither planner
    # distributes an AND over an OR itself (with one practice, "practice_id IN (...)
    # AND (a OR b)" walks the whole practice's index)
    stmt = _filters(select(Client).where(or_(*(and_(where, term) for term in terms)) if terms
                                         else where), filters)
    if resume:
        stmt = stmt.where(Client.id > bindparam("after_id"))
    if terms:
        # "id + 0", not "id": ordered by the primary key, a planner may walk the whole table in
        # id order hoping to meet 51 matches soon, and an address or number matches one client
        # or none; an expression leaves it the terms' own indexes and a sort of what they find
        return stmt.order_by(Client.id + 0).limit(bindparam("page_limit", type_=Integer))
    return stmt.order_by(Client.id).limit(bindparam("page_limit", type_=Integer))


def client_query(practice_ids: list[int], q: str | None, region: Region, *,
                 limit: int = 50) -> Select[Any]:
    """The SELECT of the first page of clients found by ``q``, values bound (to EXPLAIN it)."""
    text = (q or "").strip()
    terms, by_name = client_terms(text, region) if text else ([], False)
    if by_name:
        return name_search_query(practice_ids, text, limit)
    stmt = _terms_query(_scope_kind(practice_ids), terms, (False, None), False)
    return stmt.params(**_scope_params(practice_ids), page_limit=limit + 1)


#: What a row of a search page needs: the list's fields, and the keys its cursor is made of.
#: :func:`find_client_rows` reads only these (plain rows); :func:`find_clients` whole clients.
ROW_COLUMNS = (Client.id, Client.practice_id, Client.external_id, Client.first_name,
               Client.last_name, Client.status, Client.email, Client.phone_mobile,
               Client.comms_disabled, Client.name_key, Client.surname_key)

#: a page's rows as the API reads them: the columns, and whether the client owns an active patient
_ROW_SELECT: tuple[Any, ...] = (
    *ROW_COLUMNS, _active_owner(Client.practice_id, Client.external_id).label("owner"))

#: runs a statement with its parameters and returns its rows
Execute = Callable[[Select[Any], dict[str, Any]], Sequence[Any]]


@dataclass(frozen=True)
class _Search:
    """What every page of one search shares: how its statements run and what they read."""
    execute: Execute
    practice_ids: Scope
    filters: Filters
    params: dict[str, Any]  # the scope's and the filters' parameters
    rows: bool  # plain rows with ``owner`` (the API), or whole clients (console, CLI)


def _find_by_name(search: _Search, text: str, cursor: str | None, limit: int) -> Page:
    """A page of a name search. The cursor names the phase it stopped in, the sort key and
    the id of the page's last row."""
    after = decode_cursor(cursor, 3)
    start = 0
    if after is not None:
        if after[0] not in NAME_PHASES:
            raise Invalid("the cursor is not one this list gave out", code="invalid_cursor",
                          field="cursor")
        start = NAME_PHASES.index(after[0])
    stmt = _name_search(start, after is not None, _scope_kind(search.practice_ids),
                        search.filters, search.rows)
    found = search.execute(stmt, search.params | _name_params(text, search_key(text), after, limit))
    items = [r if search.rows else r[0] for r in found[:limit]]
    nxt = None
    if len(found) > limit:
        phase = NAME_PHASES[found[limit - 1].phase]
        nxt = encode_cursor([phase, _sort_key(phase, items[-1]), items[-1].id])
    return Page(items, nxt)


def _find(search: _Search, q: str | None, region: Region, cursor: str | None, limit: int) -> Page:
    text = (q or "").strip()
    terms, by_name = client_terms(text, region) if text else ([], False)
    if by_name:
        return _find_by_name(search, text, cursor, limit)
    after = decode_cursor(cursor, 1)
    stmt = _terms_query(_scope_kind(search.practice_ids), terms, search.filters, after is not None)
    if search.rows:
        stmt = stmt.with_only_columns(*_ROW_SELECT)
    params = search.params | {"page_limit": limit + 1}
    found = search.execute(stmt, params if after is None else params | {"after_id": after[0]})
    items = [r if search.rows else r[0] for r in found[:limit]]
    return Page(items, encode_cursor([items[-1].id]) if len(found) > limit else None)


def _search(execute: Execute, dialect_name: str, practice_ids: Scope, status: str | None,
            has_email: bool | None, rows: bool) -> _Search:
    scope = _for(dialect_name, practice_ids)
    return _Search(execute, scope, (status is not None, has_email),
                   _scope_params(scope) | _filter_params(status), rows)


async def find_clients(session: AsyncSession, practice_ids: list[int], q: str | None, *,
                       region: Region = "US", status: str | None = None,
                       has_email: bool | None = None, cursor: str | None = None,
                       limit: int = 50) -> Page:
    """A page of :class:`Client` instances (console, CLI); every read in one ``run_sync``."""
    def run(sync: Session) -> Page:
        search = _search(lambda stmt, params: sync.execute(stmt, params).all(),
                         sync.get_bind().dialect.name, practice_ids, status, has_email, False)
        return _find(search, q, region, cursor, limit)

    return await session.run_sync(run)


def find_client_rows(conn: Connection, practice_ids: Scope, q: str | None, *,
                     region: Region = "US", status: str | None = None,
                     has_email: bool | None = None, cursor: str | None = None,
                     limit: int = 50) -> Page:
    """:func:`find_clients` as plain rows of :data:`ROW_COLUMNS` and ``owner`` (see
    :func:`owners_in`), read on ``conn`` (inside :meth:`hub.core.Hub.read`): the same
    statements, the same page and cursor."""
    search = _search(lambda stmt, params: conn.execute(stmt, params).all(), conn.dialect.name,
                     practice_ids, status, has_email, True)
    return _find(search, q, region, cursor, limit)


def owners_in(rows: list[Any]) -> set[tuple[int, str]]:
    """:func:`active_patient_owners_on` for the rows of :func:`find_client_rows`, which carry it."""
    return {(r.practice_id, r.external_id) for r in rows if r.owner}


_FIRST_COUNTRY = select(Practice.country).order_by(Practice.id).limit(1)
_COUNTRY = select(Practice.country).where(Practice.id == bindparam("id"))


def region_on(conn: Connection, practice_ids: Scope) -> str:
    """The country phones are read in: the (first) practice's in scope."""
    if practice_ids is None:
        country = conn.execute(_FIRST_COUNTRY).scalar()
    elif not practice_ids:
        return "US"
    else:
        country = conn.execute(_COUNTRY, {"id": practice_ids[0]}).scalar()
    return country or "US"


# The page's clients that own an active patient, found from the page's client ids in a
# statement built once: the tuple IN of (practice, PIMS id) pairs it replaces took twice the
# parameters, and building and expanding it cost more than running it. On SQLite a join (its
# planner probes the patients' index per client); on PostgreSQL, whose planner took that join
# as a hash join over every patient (1.3 ms on the bench's 2,000, 8.9 ms before ANALYZE), a
# LATERAL probe with LIMIT 1 per client: an index lookup each, 0.27 ms, whatever the statistics.
_OWNERS_JOIN = (
    select(Client.practice_id, Client.external_id)
    .join(Patient, and_(Patient.practice_id == Client.practice_id,
                        Patient.client_external_id == Client.external_id))
    .where(Client.id.in_(bindparam("ids", expanding=True)), Patient.status == PatientStatus.ACTIVE)
    .distinct())
_OWNER_PROBE = (select(literal(1).label("one"))
                .where(Patient.practice_id == Client.practice_id,
                       Patient.client_external_id == Client.external_id,
                       Patient.status == PatientStatus.ACTIVE)
                .limit(1).lateral("owner_probe"))
_OWNERS_LATERAL = (
    select(Client.practice_id, Client.external_id)
    .join(_OWNER_PROBE, true())
    .where(Client.id == any_(bindparam("ids", type_=ARRAY(Integer)))))


def active_patient_owners_on(conn: Connection | Session, clients: list[Any]) -> set[tuple[int, str]]:
    """(practice_id, client external id) of the given clients (or rows of them) that have an
    active patient."""
    if not clients:
        return set()
    dialect = conn.dialect if isinstance(conn, Connection) else conn.get_bind().dialect
    stmt = _OWNERS_LATERAL if dialect.name == "postgresql" else _OWNERS_JOIN
    rows = conn.execute(stmt, {"ids": sorted({c.id for c in clients})})
    return {(r[0], r[1]) for r in rows}


async def active_patient_owners(session: AsyncSession,
                                clients: list[Client]) -> set[tuple[int, str]]:
    """(practice_id, client external id) of the given clients that have an active patient."""
    return await session.run_sync(lambda sync: active_patient_owners_on(sync, clients))


def is_contactable(client: Any, owners: set[tuple[int, str]]) -> bool:
    """Active, not comms-disabled in the PIMS, with at least one active patient."""
    return (client.status == ClientStatus.ACTIVE and not client.comms_disabled
            and (client.practice_id, client.external_id) in owners)


def patient_query(practice_ids: list[int], q: str | None, *, cursor: str | None = None,
                  limit: int = 50) -> Select[Any]:
    scope = Patient.practice_id.in_(practice_ids) if practice_ids else false()
    stmt = select(Patient).where(scope)
    key = search_key(q or "") if q else ""
    if q and q.strip():
        text = q.strip()
        terms: list[ColumnElement[bool]] = [Patient.external_id == text[:64]]
        if key:
            terms.append(prefix(Patient.name_key, key))
        stmt = stmt.where(or_(*terms))
    if key:
        after = decode_cursor(cursor, 2)
        if after is not None:
            stmt = stmt.where(tuple_(Patient.name_key, Patient.id) > tuple_(after[0], after[1]))
        return stmt.order_by(Patient.name_key, Patient.id).limit(limit + 1)
    after = decode_cursor(cursor, 1)
    if after is not None:
        stmt = stmt.where(Patient.id > after[0])
    return stmt.order_by(Patient.id).limit(limit + 1)


async def find_patients(session: AsyncSession, practice_ids: list[int], q: str | None, *,
                        cursor: str | None = None, limit: int = 50) -> Page:
    rows = list((await session.execute(
        patient_query(practice_ids, q, cursor=cursor, limit=limit))).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = None
    if more:
        last = rows[-1]
        nxt = encode_cursor([last.name_key, last.id] if q and search_key(q) else [last.id])
    return Page(rows, nxt)


async def client_patients(session: AsyncSession, client: Client) -> list[Patient]:
    return list((await session.execute(
        select(Patient).where(Patient.practice_id == client.practice_id,
                              Patient.client_external_id == client.external_id)
        .order_by(Patient.name, Patient.id))).scalars())
