"""The ezyVet PIMS connector: ezyVet contacts, animals, appointments, consults and reminders
as hub records.

Incremental runs ask each endpoint for ``modified_at={"gt": since}``. Each page is one batch;
its checkpoint holds, per resource, the ``since`` of the scan in progress and the next page, so
a crash resumes at the page after the last committed one. When a resource's scan ends, its
``since`` becomes the server's ``meta.timestamp`` of the scan's first page minus one second:
anything changed during the scan is read again next time, nothing is skipped.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

import aiohttp
from pydantic import BaseModel, Field, SecretStr

from connectors.ezyvet.client import Credentials, EzyVetClient, EzyVetError
from hub.pims.connector import ConnectorConfig, ConnectorContext, ConnectorError, Health
from hub.pims.records import (
    AppointmentRecord,
    Batch,
    Checkpoint,
    ClientRecord,
    PatientRecord,
    Reject,
    ReminderRecord,
    VisitRecord,
)

DEFAULT_SCOPE = (
    "read-contact read-contactdetail read-address read-animal read-appointment "
    "read-appointmenttype read-consult read-species read-breed read-sex"
)
# [U] in CONTRACTS.md §4.4: the names these fields and values have in the fake server.
DETAIL_TYPES = {1: "email", 2: "phone_home", 3: "phone_work", 4: "phone_mobile"}
FIELD_CLASS = "contact_class"
FIELD_BALANCE = "balance_due"
FIELD_NO_COMMS = "stop_communications"
APPOINTMENT_STATUSES = {1: "booked", 2: "confirmed", 3: "arrived", 4: "completed",
                        5: "cancelled", 6: "no_show"}

# (resource, path, record kind), in the order a run reads them: owners before their animals.
RESOURCES = (
    ("contact", "/v1/contact", "client"),
    ("animal", "/v1/animal", "patient"),
    ("appointment", "/v2/appointment", "appointment"),
    ("consult", "/v1/consult", "visit"),
    ("reminder", "/v1/reminder", "reminder"),
)


class EzyVetConfig(ConnectorConfig):
    """``[[practices.pims]]`` keys for ``connector = "ezyvet"``."""

    base_url: str = Field("https://api.ezyvet.com", description="API host (trial: api.trial…)")
    client_id: str
    client_secret: SecretStr
    partner_id: str
    site_uid: str | None = None
    scope: str = DEFAULT_SCOPE
    page_size: int = Field(200, ge=1, le=200)
    renew_before_seconds: float = Field(300, ge=0, description="renew the token this early")
    max_attempts: int = Field(8, ge=1, description="tries per call on 429/5xx")
    max_wait_seconds: float = Field(120, ge=0, description="longest wait between tries")
    timeout_seconds: float = Field(30, gt=0)
    #: the reminder endpoint is [U] in the contract; turn it off if the site has none.
    reminders: bool = True


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
    name: ClassVar[str] = "ezyvet"
    config_model: ClassVar[type[BaseModel]] = EzyVetConfig

    def __init__(self, config: EzyVetConfig, context: ConnectorContext) -> None:
        self.config = config
        self.context = context
        self._names: dict[str, dict[int, str]] = {}
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
                                c.scope, c.site_uid),
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
            return Health(True, f"{body.get('meta', {}).get('items_total', '?')} contacts")
        except EzyVetError as err:
            return Health(False, str(err))
        except Exception as err:  # health never raises
            return Health(False, f"ezyVet health check failed: {err!r}")

    async def batches(self, since: Checkpoint | None, full: bool) -> AsyncIterator[Batch]:
        state: dict[str, Any] = {} if full or not since else {k: dict(v) for k, v in since.items()}
        try:
            async with self._open() as client:
                resources = [r for r in RESOURCES if r[0] != "reminder" or self.config.reminders]
                for index, (resource, path, kind) in enumerate(resources):
                    async for batch in self._scan(client, state, resource, path, kind):
                        batch.progress = (index + (batch.progress or 0.0)) / len(resources)
                        yield batch
        except EzyVetError as err:
            raise ConnectorError(str(err)) from err

    async def _scan(self, client: EzyVetClient, state: dict[str, Any], resource: str,
                    path: str, kind: str) -> AsyncIterator[Batch]:
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

    # -- mapping -------------------------------------------------------------------------
    async def _convert(self, client: EzyVetClient, kind: str, items: list[dict[str, Any]],
                       batch: Batch) -> None:
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

    async def _related(self, client: EzyVetClient, kind: str,
                       items: list[dict[str, Any]]) -> tuple[Any, ...]:
        if kind == "client":
            ids = [int(i["id"]) for i in items if isinstance(i.get("id"), int)]
            details: dict[str, dict[str, str]] = {}
            if ids:
                for d in await client.all_items("/v1/contactdetail", {"contact_id": {"in": ids}}):
                    if str(d.get("active", 1)) == "0":
                        continue
                    field = DETAIL_TYPES.get(d.get("contact_detail_type_id"))
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

    def _client(self, item: dict[str, Any], details: dict[str, dict[str, str]],
                addresses: dict[int, dict[str, Any]]) -> ClientRecord | None:
        if str(item.get("is_customer", 1)) == "0":
            return None  # suppliers, vets, staff: not the practice's clients
        mine = details.get(str(item["id"]), {})
        address = addresses.get(item.get("address_postal")) or addresses.get(
            item.get("address_physical")) or {}
        balance = item.get(FIELD_BALANCE)
        return ClientRecord(
            external_id=_id(item),
            first_name=_text(item.get("first_name")) or _text(item.get("business_name")),
            last_name=_text(item.get("last_name")),
            status="active" if _flag(item.get("active", 1)) else "inactive",
            client_class=_text(item.get(FIELD_CLASS)),
            balance=Decimal(str(balance)) if balance not in (None, "") else None,
            comms_disabled=_flag(item.get(FIELD_NO_COMMS)),
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
            status = "deceased"
        else:
            status = "active" if _flag(item.get("active", 1)) else "inactive"
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
        status = (APPOINTMENT_STATUSES.get(status_id, str(status_id)) if status_id is not None
                  else None)
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
        return ReminderRecord(
            external_id=_id(item),
            patient_external_id=_opt_id(item, "animal_id"),
            service=_text(item.get("description")),
            due_date=_epoch_date(item.get("due_at")),
            status="active" if _flag(item.get("active", 1)) else "inactive",
            modified_at=_epoch(item.get("modified_at")),
            raw=item,
        )
