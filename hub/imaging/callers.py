"""Which practice an inbound image transport's caller belongs to.

A DICOM caller is known by its calling AE title: registered in the ``calling_aes`` table (from
the config's ``calling_aes`` of a practice, or an account's AE), optionally bound to the
source addresses or networks it may call from. A transport asks :func:`identify_caller` once
per association and never reads those tables itself (plugins go through the core's services).

It is one query per association for a registered caller (two for an unregistered one sent to
the fallback practice), reading only the two columns the answer needs, on the read engine in
one hand-off (on SQLite it never queues behind the committer's writes); no cache, so an AE
registered or removed through the API or another process counts from the next association.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Connection, select

from hub.db.models import CallingAE, Practice
from hub.errors import Forbidden

if TYPE_CHECKING:
    from hub.core import Hub

__all__ = ["Caller", "CallerRefused", "address_allowed", "identify_caller"]


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
