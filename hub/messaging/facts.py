"""Gathering the facts a contact policy judges: client, patients, consent, suppressions, time.

Reads are batched (a campaign judges thousands of clients in a handful of queries). Clients and
patients belong to the PIMS domain (``hub.pims.models``); they are read, never written, here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db.models import Practice
from hub.messaging.addresses import normalise_email, postal_key
from hub.messaging.config import messaging_config
from hub.messaging.models import AddressSuppression, ConsentRecord
from hub.messaging.verdict import ClientFacts, ContactContext, SuppressionFact

if TYPE_CHECKING:
    from hub.core import Hub

CHUNK = 900


class PimsUnavailable(RuntimeError):
    """Messages to clients need the PIMS domain's tables (hub.pims.models)."""


def pims_models() -> tuple[Any, Any]:
    try:
        from hub.pims.models import Client, Patient  # noqa: PLC0415 - optional domain
    except ImportError as err:  # pragma: no cover - depends on the installed domains
        raise PimsUnavailable("the PIMS domain (hub.pims.models) is not installed") from err
    return Client, Patient


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for i in range(0, len(values), CHUNK):
        yield values[i : i + CHUNK]


def _get(obj: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            return value
    return default


def _comms_flag(client: Any) -> bool | None:
    """The PIMS's "no communications" flag; None (unknown) when the PIMS could not supply it."""
    if not hasattr(client, "comms_disabled"):
        return False
    value = client.comms_disabled
    return None if value is None else bool(value)


def client_postal_address(client: Any, name: str) -> dict[str, str] | None:
    line1 = _get(client, "address_line1")
    if not line1:
        return None
    return {
        "name": name[:40],
        "address_line1": line1,
        "address_line2": _get(client, "address_line2", default="") or "",
        "address_city": _get(client, "city", "address_city", default="") or "",
        "address_state": _get(client, "region", "state", "address_state", default="") or "",
        "address_zip": _get(client, "postcode", "zip", "address_zip", default="") or "",
        "address_country": _get(client, "country", "address_country", default="US") or "US",
    }


@dataclass
class PracticeFacts:
    """What message templates and contact rules may know about the sending practice."""
    id: int
    slug: str
    name: str
    timezone: str
    country: str
    email: str | None
    phone: str | None = None


async def load_practices(session: AsyncSession, ids: Iterable[int | None]) -> dict[int, PracticeFacts]:
    wanted = sorted({i for i in ids if i is not None})
    out: dict[int, PracticeFacts] = {}
    for chunk in _chunks(wanted):
        rows = await session.execute(
            select(Practice.id, Practice.slug, Practice.name, Practice.timezone, Practice.country,
                   Practice.email, Practice.phone).where(Practice.id.in_(chunk))
        )
        for r in rows:
            out[r.id] = PracticeFacts(r.id, r.slug, r.name, r.timezone or "UTC", r.country or "US", r.email,
                                      r.phone)
    return out


#: what ClientFacts is made of; a PIMS model without some of them (``mobile`` or
#: ``phone_mobile``, ``city`` or ``address_city``...) reads the others
_CLIENT_COLUMNS = (
    "id", "practice_id", "external_id", "first_name", "last_name", "status", "comms_disabled",
    "email", "phone_mobile", "mobile", "address_line1", "address_line2", "city", "address_city",
    "region", "state", "address_state", "postcode", "zip", "address_zip", "country",
    "address_country",
)


async def load_clients(session: AsyncSession, ids: Sequence[int]) -> dict[int, tuple[ClientFacts, Any]]:
    """ClientFacts (and the PIMS row's columns they were made of) for each known client id."""
    Client, Patient = pims_models()
    from hub.pims.records import PatientStatus  # noqa: PLC0415 - optional domain, as above
    ids = sorted(set(ids))
    rows: dict[int, Any] = {}
    counts: dict[int, int] = defaultdict(int)
    # the columns the facts are made of, as plain rows: building ORM objects for thousands of
    # clients costs more than the query
    columns = [getattr(Client, name) for name in _CLIENT_COLUMNS if hasattr(Client, name)]
    for chunk in _chunks(ids):
        for c in await session.execute(select(*columns).where(Client.id.in_(chunk))):
            rows[c.id] = c
    # Patients name their owner by the PIMS's external id, within the practice.
    by_practice: dict[int, dict[str, int]] = defaultdict(dict)
    for c in rows.values():
        by_practice[c.practice_id][c.external_id] = c.id
    for practice_id, owners in by_practice.items():
        for chunk in _chunks(sorted(owners)):
            stmt = (
                select(Patient.client_external_id, func.count())
                .where(Patient.practice_id == practice_id, Patient.client_external_id.in_(chunk),
                       Patient.status == PatientStatus.ACTIVE)
                .group_by(Patient.client_external_id)
            )
            for external_id, n in await session.execute(stmt):
                counts[owners[external_id]] = n
    practices = await load_practices(session, (getattr(c, "practice_id", None) for c in rows.values()))
    out = {}
    for cid, c in rows.items():
        owner_practice = getattr(c, "practice_id", None)
        practice = practices.get(owner_practice) if owner_practice is not None else None
        region = practice.country if practice else "US"
        name = " ".join(p for p in (_get(c, "first_name"), _get(c, "last_name")) if p) or f"client {cid}"
        facts = ClientFacts(
            id=cid,
            practice_id=getattr(c, "practice_id", None),
            name=name,
            active=(c.status or "active") == "active",
            comms_disabled=_comms_flag(c),
            active_patients=counts.get(cid, 0),
            email=(_get(c, "email") or None),
            phone_mobile=_get(c, "phone_mobile", "mobile"),
            postal_address=client_postal_address(c, name),
            region=region,
        )
        out[cid] = (facts, c)
    return out


async def load_consent(
    session: AsyncSession, client_ids: Sequence[int]
) -> dict[int, list[tuple[str, str, bool, str]]]:
    """Each client's ledger rows, oldest first: (category, channel, allowed, source)."""
    out: dict[int, list[tuple[str, str, bool, str]]] = defaultdict(list)
    for chunk in _chunks(sorted(set(client_ids))):
        rows = await session.execute(
            select(ConsentRecord.client_id, ConsentRecord.category, ConsentRecord.channel,
                   ConsentRecord.allowed, ConsentRecord.source)
            # rows about an address (STOP, bounce) are history; the suppression is the state
            .where(ConsentRecord.client_id.in_(chunk), ConsentRecord.address.is_(None))
            .order_by(ConsentRecord.at, ConsentRecord.id)
        )
        for r in rows:
            out[r.client_id].append((r.category, r.channel, r.allowed, r.source))
    return out


def resolve_preference(
    rows: Sequence[tuple[str, str, bool, str]], category: str, channel: str
) -> tuple[bool | None, str | None]:
    """The latest ledger row that applies to (category, channel); "*" matches anything."""
    for cat, ch, allowed, source in reversed(rows):
        if cat in (category, "*") and ch in (channel, "*"):
            return allowed, source
    return None, None


async def load_suppressions(
    session: AsyncSession, addresses: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], list[SuppressionFact]]:
    """Active suppressions for (kind, normalised address) pairs."""
    wanted = sorted({a for a in addresses if a[1]})
    out: dict[tuple[str, str], list[SuppressionFact]] = defaultdict(list)
    by_addr = sorted({a for _, a in wanted})
    for chunk in _chunks(by_addr):
        rows = await session.execute(
            select(AddressSuppression.kind, AddressSuppression.address, AddressSuppression.reason,
                   AddressSuppression.source, AddressSuppression.detail)
            .where(AddressSuppression.address.in_(chunk), AddressSuppression.active.is_(True))
        )
        for r in rows:
            out[(r.kind, r.address)].append(SuppressionFact(r.kind, r.reason, r.source, r.detail))
    return out


def suppression_key(channel: str, address: str, postal: dict | None) -> tuple[str, str]:
    if channel == "email":
        return ("email", normalise_email(address)) if address else ("email", "")
    if channel == "sms":
        return ("sms", address)
    return ("postal", postal_key(postal))


def channel_address(channel: str, client: ClientFacts) -> tuple[str, dict | None]:
    if channel == "email":
        return (client.email or "").strip(), None
    if channel == "sms":
        return client.mobile or "", None
    return "", dict(client.postal_address) if client.postal_address else None


def build_context(
    hub: Hub,
    *,
    channel: str,
    category: str,
    address: str,
    postal: dict | None,
    client: ClientFacts | None,
    consent_rows: Sequence[tuple[str, str, bool, str]],
    suppressions: Sequence[SuppressionFact],
    practice: PracticeFacts | None,
) -> ContactContext:
    cfg = messaging_config(hub)
    preference, source = resolve_preference(consent_rows, category, channel)
    return ContactContext(
        channel=channel,
        category=category,
        now=hub.clock.now(),
        address=address,
        postal_address=postal,
        client=client,
        preference=preference,
        preference_source=source,
        suppressions=tuple(suppressions),
        practice_timezone=practice.timezone if practice else "UTC",
        quiet_hours=(cfg.quiet_hours_start, cfg.quiet_hours_end),
        quiet_hours_channels=frozenset(cfg.quiet_hours_channels),
        require_opt_in=frozenset(cfg.require_opt_in),
        unknown_comms_flag_vetoes=frozenset(cfg.unknown_comms_flag_vetoes),
    )
