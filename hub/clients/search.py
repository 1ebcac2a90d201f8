"""Finding clients and patients: by name prefix, email, phone or PIMS id, a page at a time.

Every form of the query is answered from an index (see the indexes on
:class:`hub.pims.models.Client`): a name is folded into a search key and looked up as one
range of ``name_key`` ("first last") or ``surname_key`` ("last first") — ``key >= q`` and
``key < q + "~"``, since keys hold only ``[a-z0-9 ]`` — read in phases (:data:`NAME_PHASES`:
the exact PIMS id, surnames, then first names), each an ordered range read only as far as the
page needs; an email as a range of ``email_key``,
a phone as its E.164 form on each phone column, and the text as it is on the PIMS id. The
scope is always ``practice_id IN (...)``, the leading column of each index.

Pages are cursor-based: the cursor carries the last row's sort key, never an offset.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
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
    false,
    literal,
    or_,
    select,
    true,
    tuple_,
)
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

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


def phone_key(text: str, region: str) -> str | None:
    """``text`` in E.164 when it reads as a phone number in ``region``, else None."""
    digits = sum(ch.isdigit() for ch in text)
    if digits < 7 or not _PHONE_CHARS.match(text.strip()):
        return None
    try:
        return normalise_phone(text.strip(), region)
    except ValueError:
        return None


def client_terms(q: str, region: str) -> tuple[list[ColumnElement[bool]], bool]:
    """The indexed conditions ``q`` may mean (OR-ed), or ``([], True)`` when it reads as a
    name (searched in phases: :func:`name_phase_query`)."""
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


class PracticeArray(list[int]):
    """Practice ids sent to PostgreSQL as one array parameter (``practice_id = ANY(:ids)``)
    rather than an ``IN`` list of one parameter each: the same plan, without SQLAlchemy
    expanding the list into the statement for every request (a sixth of the search's CPU)."""


#: ``practice_ids`` of the client search: the practices in scope (a :class:`PracticeArray` on
#: PostgreSQL), or None for every practice (an operator on SQLite: the scope is then a subquery
#: rather than a list of every id; see :func:`hub.clients.scope.search_scope_on`)
Scope = list[int] | None


def _scope(practice_ids: Scope) -> ColumnElement[bool]:
    if practice_ids is None:
        # still "practice_id IN (...)": every index on clients leads with practice_id
        return Client.practice_id.in_(select(Practice.id))
    if not practice_ids:
        return false()
    if isinstance(practice_ids, PracticeArray):
        return Client.practice_id == any_(bindparam("scope_ids", list(practice_ids), type_=ARRAY(Integer)))
    return Client.practice_id.in_(practice_ids)


def _for(dialect_name: str, practice_ids: Scope) -> Scope:
    return PracticeArray(practice_ids) if practice_ids and dialect_name == "postgresql" else practice_ids


def _filters(stmt: Select[Any], status: str | None, has_email: bool | None) -> Select[Any]:
    if status is not None:
        stmt = stmt.where(Client.status == status)
    if has_email is not None:
        stmt = stmt.where(Client.email.is_not(None) if has_email else Client.email.is_(None))
    return stmt


def name_phase_query(practice_ids: Scope, text: str, key: str, phase: str,
                     after: tuple[str, int] | None, limit: int) -> Select[Any]:
    """One phase of a name search (see :data:`NAME_PHASES`), rows after ``after``."""
    scope = _scope(practice_ids)
    if phase == "pims_id":
        stmt = select(Client).where(scope, Client.external_id == text[:64])
        if after is not None:
            stmt = stmt.where(Client.id > after[1])
        return stmt.order_by(Client.id).limit(limit)
    sort = Client.surname_key if phase == "surname" else Client.name_key
    where = [scope, prefix(sort, key), Client.external_id != text[:64]]
    if phase == "name":  # what the surname phase did not list already
        where.append(~prefix(Client.surname_key, key))
    if after is not None:
        where.append(tuple_(sort, Client.id) > tuple_(after[0], after[1]))
    return select(Client).where(*where).order_by(sort, Client.id).limit(limit)


def _terms_query(practice_ids: Scope, terms: list[ColumnElement[bool]], *,
                 status: str | None, has_email: bool | None, cursor: str | None,
                 limit: int) -> Select[Any]:
    scope = _scope(practice_ids)
    # the scope inside each arm: every index leads with practice_id, and neither planner
    # distributes an AND over an OR itself (with one practice, "practice_id IN (...)
    # AND (a OR b)" walks the whole practice's index)
    stmt = select(Client).where(or_(*(and_(scope, term) for term in terms)) if terms else scope)
    stmt = _filters(stmt, status, has_email)
    after = decode_cursor(cursor, 1)
    if after is not None:
        stmt = stmt.where(Client.id > after[0])
    if terms:
        # "id + 0", not "id": ordered by the primary key, a planner may walk the whole table in
        # id order hoping to meet 51 matches soon, and an address or number matches one client
        # or none; an expression leaves it the terms' own indexes and a sort of what they find
        return stmt.order_by(Client.id + 0).limit(limit + 1)
    return stmt.order_by(Client.id).limit(limit + 1)


def client_query(practice_ids: Scope, q: str | None, region: str, *,
                 status: str | None = None, has_email: bool | None = None,
                 cursor: str | None = None, limit: int = 50) -> Select[Any]:
    """The SELECT for one page of clients found by anything but a name (for a name, the
    surname phase's; exposed so a test can EXPLAIN it)."""
    text = (q or "").strip()
    terms, by_name = client_terms(text, region) if text else ([], False)
    if by_name:
        return _filters(name_phase_query(practice_ids, text, search_key(text), "surname",
                                         None, limit + 1), status, has_email)
    return _terms_query(practice_ids, terms, status=status, has_email=has_email, cursor=cursor,
                        limit=limit)


#: What a row of a search page needs: the list's fields, and the keys its cursor is made of.
#: :func:`find_client_rows` reads only these (plain rows); :func:`find_clients` whole clients.
ROW_COLUMNS = (Client.id, Client.practice_id, Client.external_id, Client.first_name,
               Client.last_name, Client.status, Client.email, Client.phone_mobile,
               Client.comms_disabled, Client.name_key, Client.surname_key)

#: runs one page's SELECT (built on ``select(Client)``) and returns its rows or clients
Fetch = Callable[[Select[Any]], list[Any]]


def _find_by_name(fetch: Fetch, practice_ids: Scope, text: str, *, status: str | None,
                  has_email: bool | None, cursor: str | None, limit: int) -> Page:
    """A page of a name search: the phases in order, each read up to what the page still
    needs (plus one, to know whether more follow). The cursor names the phase it stopped in."""
    key = search_key(text)
    after = decode_cursor(cursor, 3)
    start = 0
    if after is not None:
        if after[0] not in NAME_PHASES:
            raise Invalid("the cursor is not one this list gave out", code="invalid_cursor",
                          field="cursor")
        start = NAME_PHASES.index(after[0])
    found: list[tuple[str, Any]] = []
    for phase in NAME_PHASES[start:]:
        resume = (after[1], after[2]) if after is not None and phase == after[0] else None
        stmt = _filters(name_phase_query(practice_ids, text, key, phase, resume,
                                         limit + 1 - len(found)), status, has_email)
        found += [(phase, c) for c in fetch(stmt)]
        if len(found) > limit:
            break
    nxt = None
    if len(found) > limit:
        phase, last = found[limit - 1]
        sort = {"pims_id": "", "surname": last.surname_key, "name": last.name_key}[phase]
        nxt = encode_cursor([phase, sort, last.id])
    return Page([c for _, c in found[:limit]], nxt)


def _find(fetch: Fetch, practice_ids: Scope, q: str | None, *, region: str,
          status: str | None, has_email: bool | None, cursor: str | None, limit: int) -> Page:
    text = (q or "").strip()
    terms, by_name = client_terms(text, region) if text else ([], False)
    if by_name:
        return _find_by_name(fetch, practice_ids, text, status=status, has_email=has_email,
                             cursor=cursor, limit=limit)
    stmt = _terms_query(practice_ids, terms, status=status, has_email=has_email, cursor=cursor,
                        limit=limit)
    rows = fetch(stmt)
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor([rows[-1].id]) if more else None)


async def find_clients(session: AsyncSession, practice_ids: list[int], q: str | None, *,
                       region: str = "US", status: str | None = None,
                       has_email: bool | None = None, cursor: str | None = None,
                       limit: int = 50) -> Page:
    """A page of :class:`Client` instances (console, CLI); every read in one ``run_sync``."""
    def run(sync: Session) -> Page:
        scope = _for(sync.get_bind().dialect.name, practice_ids)
        return _find(lambda stmt: list(sync.execute(stmt).scalars()), scope, q,
                     region=region, status=status, has_email=has_email, cursor=cursor, limit=limit)

    return await session.run_sync(run)


def find_client_rows(conn: Connection, practice_ids: Scope, q: str | None, *,
                     region: str = "US", status: str | None = None,
                     has_email: bool | None = None, cursor: str | None = None,
                     limit: int = 50) -> Page:
    """:func:`find_clients` as plain rows of :data:`ROW_COLUMNS`, read on ``conn`` (inside
    :meth:`hub.core.Hub.read`): the same statements, the same page and cursor."""
    return _find(lambda stmt: list(conn.execute(stmt.with_only_columns(*ROW_COLUMNS))),
                 _for(conn.dialect.name, practice_ids), q, region=region, status=status,
                 has_email=has_email, cursor=cursor, limit=limit)


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
