"""Which practice an inbound image transport's caller belongs to.

A DICOM caller is known by its calling AE title: registered in the ``calling_aes`` table (from
the config's ``calling_aes`` of a practice, or an account's AE), optionally bound to the
source addresses or networks it may call from. A transport asks :func:`identify_caller` once
per association and never reads those tables itself (plugins go through the core's services).

It is one query per association for a registered caller (two for an unregistered one sent to
the fallback practice), reading only the two columns the answer needs, on the read engine in
one hand-off (on SQLite it never queues behind the committer's writes); no cache, so an AE
registered or removed through the API or another process counts from the next association.

A transport that receives on threads of its own asks :class:`CallerLookup` instead, which on
SQLite reads in the calling thread on read-only connections of its own: with fifty
associations arriving at once, each check's trip through a busy event loop (and aiosqlite's
thread and back) made it wait hundreds of milliseconds (docs/performance.md). It is the same
query, equally uncached.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, make_url, select

from hub.db.engine import make_sync_sqlite_reader
from hub.db.models import CallingAE, Practice
from hub.errors import Forbidden

if TYPE_CHECKING:
    from hub.core import Hub

__all__ = ["Caller", "CallerLookup", "CallerRefused", "address_allowed", "identify_caller"]


@dataclass(frozen=True, slots=True)
class Caller:
    """An identified caller: the practice its instances are filed under, and who and where
    it called from (recorded on each instance)."""

    practice_id: int
    calling_ae: str
    peer_address: str


class CallerRefused(Forbidden):
    """The caller may not send: not registered (and no fallback practice), or calling from an
    address its registration does not allow. The message says which, for the operator."""

    default_code = "caller_refused"


async def identify_caller(
    hub: Hub, calling_ae: str, address: str, *, fallback_practice: str | None
) -> Caller:
    """The practice ``calling_ae`` calling from ``address`` belongs to.

    ``fallback_practice``: the slug of the practice an unregistered caller's instances go to,
    or None to refuse unregistered callers. Raises :class:`CallerRefused`.
    """
    found = await hub.read(lambda conn: _lookup(conn, calling_ae, fallback_practice))
    return _caller(found, calling_ae, address, fallback_practice)


READERS = 4  # connections of a CallerLookup; a check holds one for a single short query


class CallerLookup:
    """:func:`identify_caller`, blocking, for a thread that must not wait for the event loop.

    On an SQLite file it reads on up to :data:`READERS` connections of its own (WAL: a reader
    never waits for the writer nor holds it up; ``query_only``, as the hub's read engine);
    elsewhere :attr:`available` is False and the caller goes through :func:`identify_caller`.
    """

    def __init__(self, hub: Hub) -> None:
        url = make_url(hub.config.database.url)
        self._engine: Engine | None = None
        if hub.is_sqlite and url.database not in (None, "", ":memory:"):
            self._engine = make_sync_sqlite_reader(hub.config.database.url, READERS)

    @property
    def available(self) -> bool:
        return self._engine is not None

    def warm(self) -> None:
        """Blocking: open the connections and read the schema now, not when the first
        associations arrive (a burst of them would queue behind the opening)."""
        if self._engine is None:
            return
        conns = [self._engine.connect() for _ in range(READERS)]
        try:
            for conn in conns:
                conn.execute(select(CallingAE.id).limit(1)).all()
        finally:
            for conn in conns:
                conn.close()

    def identify(self, calling_ae: str, address: str, *, fallback_practice: str | None) -> Caller:
        """Blocking: as :func:`identify_caller`. Only when :attr:`available`."""
        assert self._engine is not None
        with self._engine.connect() as conn:
            found = _lookup(conn, calling_ae, fallback_practice)
        return _caller(found, calling_ae, address, fallback_practice)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


def _caller(
    found: tuple[tuple[int, list[str] | None], bool] | None, calling_ae: str, address: str,
    fallback_practice: str | None,
) -> Caller:
    if found is None:
        if fallback_practice is None:
            raise CallerRefused(f"calling AE {calling_ae} not registered, from {address}")
        raise CallerRefused(
            f"calling AE {calling_ae} not registered and unknown_caller_practice "
            f"{fallback_practice!r} does not exist, from {address}"
        )
    row, registered = found
    if not registered:
        return Caller(row[0], calling_ae, address)
    practice_id, allowed = row
    if allowed and not address_allowed(address, allowed):
        raise CallerRefused(
            f"calling AE {calling_ae} not allowed from {address} "
            f"(registered for {', '.join(allowed)})"
        )
    return Caller(practice_id, calling_ae, address)


def _lookup(
    conn: Connection, calling_ae: str, fallback: str | None
) -> tuple[tuple[int, list[str] | None], bool] | None:
    """``((practice id, allowed sources), registered)``, or None when nobody takes the call.
    Synchronous, on the read engine: one hand-off to SQLite's thread per association, and it
    never waits for (nor holds up) the committer's writes."""
    row = conn.execute(
        select(CallingAE.practice_id, CallingAE.source_addresses)
        .where(CallingAE.ae_title == calling_ae)
    ).one_or_none()
    if row is not None:
        return (row[0], row[1]), True
    if fallback is None:
        return None
    practice_id = conn.execute(select(Practice.id).where(Practice.slug == fallback)).scalar()
    return None if practice_id is None else ((practice_id, None), False)


def address_allowed(address: str, allowed: list[str]) -> bool:
    """True when ``address`` is one of ``allowed``: addresses or networks (``10.0.0.0/24``).
    An entry that is neither allows nothing."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack listener sees IPv4 callers as ::ffff:a.b.c.d
    for entry in allowed:
        try:
            if ip in ipaddress.ip_network(str(entry).strip(), strict=False):
                return True
        except ValueError:
            continue
    return False
