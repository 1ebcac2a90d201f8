"""The ezyVet PIMS connector: ezyVet contacts, animals, appointments and consults (and, when a
site offers them, reminders) as hub records. The facts it relies on are in
docs/providers/ezyvet.md.

Incremental runs ask each endpoint for ``modified_at={"gt": since}``. Each page is one batch;
its checkpoint holds, per resource, the ``since`` of the scan in progress and the next page, so
a crash resumes at the page after the last committed one. When a resource's scan ends, its
``since`` becomes the server's ``meta.timestamp`` of the scan's first page minus one second:
anything changed during the scan is read again next time, nothing is skipped.

Nothing public says that editing a phone number, an email or an address moves the contact's
own ``modified_at``, so contact details and addresses are scanned by their own ``modified_at``
too, and the contacts they belong to are read again and emitted.

Contact detail types (email, mobile...) and appointment statuses are per-site lookup tables:
they are resolved by name once per run, never by a fixed id.

ezyVet v1 contacts carry no known "no communications" flag, client class or balance. The
connector does not invent them: its client records leave ``comms_disabled`` unknown (None), and
the hub's contact verdict treats that conservatively (``[messaging]
unknown_comms_flag_vetoes``).

Optional resources (appointments, consults, reminders) that answer 403 or 404 are "not
available here": a warning, a note in ``health()``, and the rest of the sync goes on.
Reminders are off unless ``reminders = true``: no public list of ezyVet endpoints names one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from decimal import InvalidOperation
from typing import Any, ClassVar, Literal

import aiohttp
from pydantic import BaseModel, Field, SecretStr

from connectors.ezyvet.client import (
    Credentials,
    EzyVetClient,
    EzyVetError,
    NotAvailable,
    split_scopes,
)
from hub.pims.connector import ConnectorConfig, ConnectorContext, ConnectorError, Health
from hub.pims.records import (
    AppointmentRecord,
    Batch,
    Checkpoint,
    ClientRecord,
    ClientStatus,
    EmailStatus,
    PatientRecord,
    PatientStatus,
    PetAppStatus,
    RecordKind,
    Reject,
    ReminderRecord,
    ReminderStatus,
    VisitRecord,
)

log = logging.getLogger(__name__)

#: Read scopes every run needs; ``read-reminder`` is added when reminders are turned on.
BASE_SCOPES = (
    "read-contact", "read-contactdetail", "read-contactdetailtype", "read-address",
    "read-animal", "read-appointment", "read-appointmenttype", "read-appointmentstatus",
    "read-consult", "read-species", "read-breed", "read-sex",
)
#: Contact detail type names (compared case-insensitively) for each client field. The names a
#: site uses are not published; these are the likely ones and the config can replace them.
DEFAULT_DETAIL_TYPES: dict[str, list[str]] = {
    "email": ["email", "e-mail", "email address"],
    "phone_mobile": ["mobile", "mobile phone", "cell", "cell phone"],
    "phone_home": ["phone", "home", "home phone", "landline"],
    "phone_work": ["work", "work phone", "business phone", "office"],
}
#: Client fields no known ezyVet v1 contact field supplies (see the module docstring).
UNSUPPLIED_FIELDS = ("comms_disabled", "client_class", "balance", "email_status", "pet_app_status")

# (resource, path, record kind), in the order a run reads them: owners before their animals.
# "contactdetail" and "address" re-emit the contacts whose details or addresses changed.
ResourceKind = RecordKind | Literal["client_of_detail", "client_of_address"]
RESOURCES: tuple[tuple[str, str, ResourceKind], ...] = (
    ("contact", "/v1/contact", "client"),
    ("contactdetail", "/v1/contactdetail", "client_of_detail"),
    ("address", "/v1/address", "client_of_address"),
    ("animal", "/v1/animal", "patient"),
    ("appointment", "/v2/appointment", "appointment"),
    ("consult", "/v1/consult", "visit"),
    ("reminder", "/v1/reminder", "reminder"),
)
#: Resources a site may not offer (or the partner may not be granted): skipped on 403/404.
OPTIONAL = frozenset({"appointment", "consult", "reminder"})


class EzyVetConfig(ConnectorConfig):
    """``[[practices.pims]]`` keys for ``connector = "ezyvet"``."""

    base_url: str = Field("https://api.ezyvet.com", description="API host (trial: api.trial…)")
    client_id: str
    client_secret: SecretStr
    partner_id: str
    site_uid: str | None = None
    #: the read scopes to ask for (a list, or one string split on commas or spaces); None
    #: asks for the scopes the enabled resources need.
    scope: list[str] | str | None = None
    page_size: int = Field(200, ge=1, le=200)
    renew_before_seconds: float = Field(300, ge=0, description="renew the token this early")
    max_attempts: int = Field(8, ge=1, description="tries per call on 429/5xx")
    max_wait_seconds: float = Field(120, ge=0, description="longest wait between tries")
    timeout_seconds: float = Field(30, gt=0)
    #: no public list of ezyVet endpoints names a reminder endpoint: on only when the site has one.
    reminders: bool = False
    #: client field -> contact detail type names that fill it (case-insensitive)
    detail_types: dict[str, list[str]] = Field(default_factory=lambda: dict(DEFAULT_DETAIL_TYPES))

    def scopes(self) -> tuple[str, ...]:
        if self.scope is not None:
            given = split_scopes(self.scope) if isinstance(self.scope, str) else tuple(self.scope)
            return tuple(dict.fromkeys(given))
        return BASE_SCOPES + (("read-reminder",) if self.reminders else ())


def _epoch(value: Any) -> datetime | None:
    if value in (None, "", 0, "0"):
        return None
    return datetime.fromtimestamp(float(value), UTC)


def _epoch_date(value: Any) -> date | None:
    moment = _epoch(value)
    return moment.date() if moment else None


def _flag(value: Any) -> bool:
    if value in (None, ""):
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int) or (isinstance(value, str) and value.strip() in ("0", "1")):
        return bool(int(value))
    raise ValueError(f"not a 0/1 flag: {value!r}")


def _id(item: dict[str, Any], key: str = "id") -> str:
    value = item.get(key)
    if isinstance(value, bool) or not isinstance(value, int | str) or str(value).strip() == "":
        raise ValueError(f"missing or invalid {key}: {value!r}")
    return str(value)


def _opt_id(item: dict[str, Any], key: str) -> str | None:
    return None if item.get(key) in (None, "", 0) else _id(item, key)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str | int | float):
        raise ValueError(f"not text: {value!r}")
    return str(value)


class EzyVetConnector:
    """The PIMS connector that syncs a practice's data from ezyVet's API."""
    name: ClassVar[str] = "ezyvet"
    config_model: ClassVar[type[BaseModel]] = EzyVetConfig
    #: client fields this connector cannot supply: it leaves them unknown.
    unsupplied_fields: ClassVar[tuple[str, ...]] = UNSUPPLIED_FIELDS

    def __init__(self, config: EzyVetConfig, context: ConnectorContext) -> None:
        self.config = config
        self.context = context
        self._names: dict[str, dict[int, str | None]] = {}
        #: per-site lookups, resolved by name once per run
        self._detail_fields: dict[int, str] = {}
        self._appointment_statuses: dict[int, str] = {}
        #: optional resource -> why it is not available here (from the last run that tried it)
        self.unavailable: dict[str, str] = {}
        self.client: EzyVetClient | None = None

    @contextlib.asynccontextmanager
    async def _open(self) -> AsyncIterator[EzyVetClient]:
        async with contextlib.AsyncExitStack() as stack:
            http = self.context.http
            if http is None:
                http = await stack.enter_async_context(aiohttp.ClientSession())
            c = self.config
            if self.client is None:
                self.client = EzyVetClient(
                    http, c.base_url,
                    Credentials(c.client_id, c.client_secret.get_secret_value(), c.partner_id,
                                c.scopes(), c.site_uid),
                    now=self.context.now, renew_before=c.renew_before_seconds,
                    max_attempts=c.max_attempts, max_wait=c.max_wait_seconds,
                    timeout=c.timeout_seconds,
                )
            else:
                self.client.http = http  # this run's session; the cached token stays
            yield self.client

    async def health(self) -> Health:
        try:
            async with self._open() as client:
                body = await client.get("/v1/contact", {"limit": "1"})
            detail = f"{body.get('meta', {}).get('items_total', '?')} contacts"
            if self.unavailable:
                detail += "; not available here: " + ", ".join(
                    f"{name} ({why})" for name, why in sorted(self.unavailable.items()))
            return Health(True, detail + "; no communications opt-out flag is read from ezyVet")
        except EzyVetError as err:
            return Health(False, str(err))
        except Exception as err:  # health never raises
            return Health(False, f"ezyVet health check failed: {err!r}")

    def _resources(self) -> list[tuple[str, str, ResourceKind]]:
        return [r for r in RESOURCES if r[0] != "reminder" or self.config.reminders]

    async def batches(self, since: Checkpoint | None, full: bool) -> AsyncIterator[Batch]:
        state: dict[str, Any] = {} if full or not since else {k: dict(v) for k, v in since.items()}
        try:
            async with self._open() as client:
                await self._load_lookups(client)
                resources = self._resources()
                for index, (resource, path, kind) in enumerate(resources):
                    if kind.startswith("client_of_") and resource not in state:
                        # First run: the contact scan just read every contact; details and
                        # addresses changed since that scan began are read again.
                        state[resource] = {"since": state.get("contact", {}).get("since")}
                    try:
                        async for batch in self._scan(client, state, resource, path, kind):
                            batch.progress = (index + (batch.progress or 0.0)) / len(resources)
                            yield batch
                    except NotAvailable as err:
                        if resource not in OPTIONAL:
                            raise
                        self._not_available(resource, err)
                        continue
                    self.unavailable.pop(resource, None)
        except EzyVetError as err:
            raise ConnectorError(str(err)) from err

    def _not_available(self, resource: str, err: NotAvailable) -> None:
        why = "not granted to this partner" if err.status == 403 else "not offered by this site"
        if self.unavailable.get(resource) != why:  # once when it starts, not every run
            log.warning("ezyVet %s for practice %s: %s (HTTP %s); skipped, the rest of the "
                        "sync goes on", resource, self.context.practice_slug, why, err.status)
        self.unavailable[resource] = why

    async def _scan(self, client: EzyVetClient, state: dict[str, Any], resource: str,
                    path: str, kind: ResourceKind) -> AsyncIterator[Batch]:
        current = state.get(resource, {})
        since = current.get("since")
        scan = current.get("scan")
        start = current.get("page", 1)
        filters = {"modified_at": {"gt": str(since)}} if since is not None else {}
        async for page, meta, items in client.pages(path, filters, limit=self.config.page_size,
                                                    start_page=start):
            if scan is None:
                scan = int(meta.get("timestamp") or self.context.now().timestamp())
            batch = Batch(checkpoint={})
            await self._convert(client, kind, items, batch)
            pages = int(meta.get("items_page_total") or 1)
            last = page >= pages or not items
            batch.progress = 1.0 if last else page / pages
            if last:
                state[resource] = {"since": scan - 1}
            else:
                state[resource] = {"since": since, "page": page + 1, "scan": scan}
            batch.checkpoint = {k: dict(v) for k, v in state.items()}
            yield batch

    # -- lookups -------------------------------------------------------------------------
    async def _load_lookups(self, client: EzyVetClient) -> None:
        """Resolve this site's contact detail types and appointment statuses by name."""
        wanted = {name.strip().lower(): field for field, names in self.config.detail_types.items()
                  for name in names}
        self._detail_fields = {}
        for row in await client.all_items("/v1/contactdetailtype"):
            field = wanted.get(str(row.get("name") or "").strip().lower())
            if field and isinstance(row.get("id"), int):
                self._detail_fields[row["id"]] = field
        if not any(f == "email" for f in self._detail_fields.values()):
            log.warning("ezyVet practice %s: no contact detail type named like an email (%s); "
                        "clients will have no email", self.context.practice_slug,
                        ", ".join(self.config.detail_types.get("email", [])))
        self._appointment_statuses = {}
        try:
            rows = await client.all_items("/v1/appointmentstatus")
        except NotAvailable as err:
            self._not_available("appointmentstatus", err)
            return
        for row in rows:
            name = str(row.get("name") or "").strip()
            if name and isinstance(row.get("id"), int):
                self._appointment_statuses[row["id"]] = "_".join(name.lower().split())

    # -- mapping -------------------------------------------------------------------------
    async def _convert(self, client: EzyVetClient, resource_kind: ResourceKind,
                       items: list[dict[str, Any]], batch: Batch) -> None:
        kind: RecordKind
        if resource_kind == "client_of_detail" or resource_kind == "client_of_address":
            items = await self._owners(client, resource_kind, items)
            kind = "client"
        else:
            kind = resource_kind
        good = []
        for item in items:
            if not isinstance(item, dict):
                batch.rejects.append(Reject(kind, "item is not an object", {"item": item}))
                continue
            try:
                _id(item)
            except ValueError as err:
                batch.rejects.append(Reject(kind, str(err), item, source="ezyvet"))
                continue
            good.append(item)
        extra = await self._related(client, kind, good)
        for item in good:
            try:
                record = getattr(self, f"_{kind}")(item, *extra)
            except (ValueError, TypeError, OverflowError, InvalidOperation) as err:
                batch.rejects.append(Reject(kind, f"unreadable {kind}: {err}", item,
                                            external_id=str(item.get("id"))))
                continue
            if record is not None:
                getattr(batch, f"{kind}s").append(record)

    async def _owners(self, client: EzyVetClient, kind: str,
                      rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The contacts that changed contact details or addresses belong to."""
        ids = sorted({r["id"] for r in rows if isinstance(r, dict) and isinstance(r.get("id"), int)})
        if kind == "client_of_detail":
            owners = sorted({r["contact_id"] for r in rows if isinstance(r, dict)
                             and isinstance(r.get("contact_id"), int)})
            return await client.all_items("/v1/contact", {"id": {"in": owners}}) if owners else []
        if not ids:
            return []
        found: dict[int, dict[str, Any]] = {}
        for key in ("address_postal", "address_physical"):
            for contact in await client.all_items("/v1/contact", {key: {"in": ids}}):
                found[contact["id"]] = contact
        return [found[i] for i in sorted(found)]

    async def _related(self, client: EzyVetClient, kind: str,
                       items: list[dict[str, Any]]) -> tuple[Any, ...]:
        if kind == "client":
            ids = [int(i["id"]) for i in items if isinstance(i.get("id"), int)]
            details: dict[str, dict[str, str | None]] = {}
            if ids:
                for d in await client.all_items("/v1/contactdetail", {"contact_id": {"in": ids}}):
                    if str(d.get("active", 1)) == "0":
                        continue
                    type_id = d.get("contact_detail_type_id")
                    field = self._detail_fields.get(type_id) if type_id is not None else None
                    if field:
                        details.setdefault(str(d.get("contact_id")), {}).setdefault(
                            field, d.get("value"))
            address_ids = sorted({a for i in items for a in (i.get("address_postal"),
                                                             i.get("address_physical"))
                                  if isinstance(a, int) and a})
            addresses = {}
            if address_ids:
                for a in await client.all_items("/v1/address", {"id": {"in": address_ids}}):
                    addresses[a["id"]] = a
            return details, addresses
        if kind == "patient":
            for resource, key in (("species", "species_id"), ("breed", "breed_id"),
                                  ("sex", "sex_id")):
                await self._load_names(client, resource, {i.get(key) for i in items})
            return ()
        if kind == "appointment":
            await self._load_names(client, "appointmenttype", {i.get("type_id") for i in items})
        return ()

    async def _load_names(self, client: EzyVetClient, resource: str, ids: set[Any]) -> None:
        known = self._names.setdefault(resource, {})
        missing = sorted(i for i in ids if isinstance(i, int) and i not in known)
        if missing:
            for row in await client.all_items(f"/v1/{resource}", {"id": {"in": missing}}):
                known[row["id"]] = row.get("name")

    def _name(self, resource: str, value: Any) -> str | None:
        return self._names.get(resource, {}).get(value) if value else None

    def _client(self, item: dict[str, Any], details: dict[str, dict[str, str | None]],
                addresses: dict[int, dict[str, Any]]) -> ClientRecord | None:
        if str(item.get("is_customer", 1)) == "0":
            return None  # suppliers, vets, staff: not the practice's clients
        mine = details.get(str(item["id"]), {})
        postal, physical = item.get("address_postal"), item.get("address_physical")
        address = ((addresses.get(postal) if postal is not None else None)
                   or (addresses.get(physical) if physical is not None else None) or {})
        return ClientRecord(
            external_id=_id(item),
            first_name=_text(item.get("first_name")) or _text(item.get("business_name")),
            last_name=_text(item.get("last_name")),
            # .value: a plain str, as before (content_hash hashes the record's repr)
            status=ClientStatus.ACTIVE.value if _flag(item.get("active", 1)) else ClientStatus.INACTIVE.value,
            # UNSUPPLIED_FIELDS: no ezyVet v1 contact field is known to carry them.
            client_class=None,
            balance=None,
            comms_disabled=None,
            # and neither an email verification status nor a pet-app registration: the record's
            # defaults ("unverified", "unregistered") stand; the hub's own bounces still show
            email_status=EmailStatus.UNVERIFIED.value,
            pet_app_status=PetAppStatus.UNREGISTERED.value,
            email=mine.get("email"),
            phone_home=mine.get("phone_home"),
            phone_work=mine.get("phone_work"),
            phone_mobile=mine.get("phone_mobile"),
            address_line1=_text(address.get("street_1")),
            address_line2=_text(address.get("street_2")) or _text(address.get("suburb")),
            city=_text(address.get("city")),
            region=_text(address.get("state")) or _text(address.get("region")),
            postcode=_text(address.get("post_code")),
            modified_at=_epoch(item.get("modified_at")),
            raw={"contact": item, "details": mine, "address": address or None},
        )

    def _patient(self, item: dict[str, Any]) -> PatientRecord:
        if _flag(item.get("is_dead")):
            status = PatientStatus.DECEASED.value
        else:
            status = PatientStatus.ACTIVE.value if _flag(item.get("active", 1)) else PatientStatus.INACTIVE.value
        return PatientRecord(
            external_id=_id(item),
            client_external_id=_opt_id(item, "contact_id"),
            name=_text(item.get("name")),
            species=self._name("species", item.get("species_id")),
            breed=self._name("breed", item.get("breed_id")),
            sex=self._name("sex", item.get("sex_id")),
            birth_date=_epoch_date(item.get("date_of_birth")),
            status=status,
            modified_at=_epoch(item.get("modified_at")),
            raw=item,
        )

    def _appointment(self, item: dict[str, Any]) -> AppointmentRecord:
        status_id = item.get("status_id")
        status = (self._appointment_statuses.get(status_id, str(status_id))
                  if status_id is not None else None)
        if not _flag(item.get("active", 1)):
            status = "cancelled"
        return AppointmentRecord(
            external_id=_id(item),
            patient_external_id=_opt_id(item, "animal_id"),
            client_external_id=_opt_id(item, "contact_id"),
            start_at=_epoch(item.get("start_at")),
            type=self._name("appointmenttype", item.get("type_id")),
            status=status,
            modified_at=_epoch(item.get("modified_at")),
            raw=item,
        )

    def _visit(self, item: dict[str, Any]) -> VisitRecord:
        return VisitRecord(
            external_id=_id(item),
            patient_external_id=_opt_id(item, "animal_id"),
            visited_at=_epoch(item.get("date")),
            reason=_text(item.get("reason_for_visit")),
            modified_at=_epoch(item.get("modified_at")),
            raw=item,
        )

    def _reminder(self, item: dict[str, Any]) -> ReminderRecord:
        # Only for sites that offer a reminder endpoint (``reminders = true``); its field
        # names are assumed (docs/providers/ezyvet.md).
        return ReminderRecord(
            external_id=_id(item),
            patient_external_id=_opt_id(item, "animal_id"),
            service=_text(item.get("description")),
            due_date=_epoch_date(item.get("due_at")),
            status=ReminderStatus.ACTIVE.value if _flag(item.get("active", 1)) else ReminderStatus.INACTIVE.value,
            modified_at=_epoch(item.get("modified_at")),
            raw=item,
        )
