"""A fake ezyVet API server, built to the facts in docs/providers/ezyvet.md.

What it serves:

- ``POST /v1/oauth/access_token``: client-credentials token (JSON body, or form-encoded as one
  older client sends it), ``{"access_token", "token_type": "Bearer", "expires_in"}``; tokens live
  ``token_ttl`` seconds (12 h by default) on the fake's clock. ``scope`` may separate scopes
  with commas or spaces; a token reads only the resources its ``read-<resource>`` scopes name
  (anything else answers 403). ``expires_in_epoch=True`` answers ``expires_in`` as an absolute
  epoch time, as ezyVet's documentation example reads. A new token for a (partner, site)
  invalidates the previous one when ``one_token_per_site`` is set.
- ``GET /v1/contact``, ``/v1/contactdetail``, ``/v1/contactdetailtype``, ``/v1/address``,
  ``/v1/animal``, ``/v2/appointment``, ``/v1/appointmenttype``, ``/v1/appointmentstatus``,
  ``/v1/consult``, ``/v1/species``, ``/v1/breed`` and ``/v1/sex``, each a
  ``{"meta": {...}, "items": [{"<resource>": {...}}], "messages": []}`` envelope with ``page``
  (from 1) and ``limit`` (up to 200, default 10), ordered by id. ``/v1/reminder`` exists only
  with ``reminders=True``: no public list of ezyVet endpoints names it, so by default it answers
  404 like any unknown path.
- Filters: any other query parameter is a field; its value is JSON, ``{"op": value}`` with ``eq``,
  ``neq``, ``gt``, ``lt``, ``gte``, ``lte``, ``like``, ``in`` (several operators combine as a
  range), or a bare value meaning ``eq``. Numbers sent as strings (``{"gt":"1745107200"}``)
  compare as numbers.
- Errors: ``{"messages": [{"level": "error", "type": ..., "text": ..., "fields": [...]}]}``.

Contact detail types and appointment statuses are per-site lookup tables; the fake seeds them
with ids that differ from any small fixed numbering (``DETAIL_TYPE_IDS``,
``APPOINTMENT_STATUS_IDS``). Contacts carry only fields ezyVet v1 is known to have: no
communications opt-out, client class or balance. Changing a contact's detail or address
(``set_detail``, ``set_address``) moves that row's ``modified_at``, not the contact's.

Rate limiting: ``rate_limit`` requests per endpoint per 60 s window (None: unlimited), answered
with 429 plus ``retry-after``, ``x-ratelimit-remaining`` and ``x-ratelimit-reset`` (the reset as
epoch seconds). Every response carries the two ``x-ratelimit-*`` headers.

Test controls: ``advance(seconds)`` moves the fake's clock (tokens expire, modified_at moves);
``expire_tokens()``, ``expire_tokens_after(calls)``; ``throttle(n, retry_after)`` answers the
next ``n`` API calls with 429; ``fail_next(n, status)`` with a 5xx; ``inject_malformed(resource)``
adds an item that no connector can read; ``deny(resource)`` answers 403 for it whatever the
scopes. ``requests`` records (method, path, query) of every call, ``token_requests`` counts
token grants and ``token_bodies`` keeps each token request's body.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from hub.testing.loopback import LoopbackServer

API_PATHS = {
    "/v1/contact": "contact",
    "/v1/contactdetail": "contactdetail",
    "/v1/address": "address",
    "/v1/animal": "animal",
    "/v2/appointment": "appointment",
    "/v1/appointmenttype": "appointmenttype",
    "/v1/consult": "consult",
    "/v1/species": "species",
    "/v1/breed": "breed",
    "/v1/sex": "sex",
    "/v1/contactdetailtype": "contactdetailtype",
    "/v1/appointmentstatus": "appointmentstatus",
}
REMINDER_PATH = "/v1/reminder"
MAX_LIMIT = 200
DEFAULT_LIMIT = 10
TOKEN_TTL = 12 * 3600

# Per-site lookup rows the fake seeds: name -> id. The ids are deliberately not 1, 2, 3...
DETAIL_TYPE_IDS = {"Email": 37, "Phone": 38, "Fax": 39, "Mobile": 41, "Work Phone": 44}
DETAIL_EMAIL = DETAIL_TYPE_IDS["Email"]
DETAIL_PHONE_HOME = DETAIL_TYPE_IDS["Phone"]
DETAIL_PHONE_WORK = DETAIL_TYPE_IDS["Work Phone"]
DETAIL_PHONE_MOBILE = DETAIL_TYPE_IDS["Mobile"]
APPOINTMENT_STATUS_IDS = {"Booked": 12, "Confirmed": 13, "Arrived": 15, "Completed": 16,
                          "Cancelled": 18, "No Show": 19}
#: scopes the token endpoint grants when none is asked for
ALL_READ_SCOPES = frozenset(f"read-{r}" for r in (*API_PATHS.values(), "reminder"))


def messages_body(text: str, type_: str = "error", *, fields: list[str] | None = None,
                  ) -> dict[str, Any]:
    """ezyVet's error body."""
    return {"messages": [{"level": "error", "type": type_, "text": text, "fields": fields or []}]}

_OPS = {
    "eq": lambda a, b: a == b,
    "neq": lambda a, b: a != b,
    "gt": lambda a, b: a is not None and a > b,
    "lt": lambda a, b: a is not None and a < b,
    "gte": lambda a, b: a is not None and a >= b,
    "lte": lambda a, b: a is not None and a <= b,
}


class FilterError(ValueError):
    """A list filter the fake cannot apply; answered as ezyVet answers a bad filter."""
    pass


def _coerce(value: Any, like: Any) -> Any:
    """Compare a filter value the way the stored field is typed ("1745107200" vs an int)."""
    if isinstance(like, bool) or like is None:
        return value
    if isinstance(like, int | float) and isinstance(value, str):
        try:
            return float(value) if "." in value else int(value)
        except ValueError as err:
            raise FilterError(f"not a number: {value!r}") from err
    return value


def _matches(item: dict[str, Any], name: str, spec: Any) -> bool:
    current = item.get(name)
    if not isinstance(spec, dict):
        spec = {"eq": spec}
    for op, operand in spec.items():
        if op == "in":
            if not isinstance(operand, list):
                raise FilterError(f"'in' needs an array for {name}")
            if current not in [_coerce(v, current) for v in operand]:
                return False
        elif op == "like":
            pattern = "^" + re.escape(str(operand)).replace("%", ".*").replace("_", ".") + "$"
            if current is None or not re.match(pattern, str(current)):
                return False
        elif op in _OPS:
            if not _OPS[op](current, _coerce(operand, current)):
                return False
        else:
            raise FilterError(f"unknown operator {op!r} for {name}")
    return True


@dataclass
class FakeEzyVet(LoopbackServer):
    """A fake ezyVet API on a loopback port: OAuth tokens, paged lists, rate limits and faults."""
    client_id: str = "vethub-client"
    client_secret: str = "vethub-secret"
    partner_id: str = "vethub-partner"
    token_ttl: int = TOKEN_TTL
    rate_limit: int | None = None
    retry_after: int = 1
    #: serve /v1/reminder (its fields here are a guess: ``description``, ``due_at``)
    reminders: bool = False
    #: answer expires_in as an absolute epoch time instead of a duration
    expires_in_epoch: bool = False
    #: a new token for a (partner, site) invalidates the one granted before it
    one_token_per_site: bool = False
    #: seconds added to the wall clock: the fake's notion of now.
    offset: float = 0.0

    tables: dict[str, dict[int, dict[str, Any]]] = field(
        default_factory=lambda: {name: {} for name in (*API_PATHS.values(), "reminder")}
    )
    tokens: dict[str, float] = field(default_factory=dict)
    token_scopes: dict[str, frozenset[str]] = field(default_factory=dict)
    token_bodies: list[dict[str, Any]] = field(default_factory=list)
    denied: set[str] = field(default_factory=set)
    _site_tokens: dict[tuple[str, str], str] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    token_requests: int = 0
    base_url: str = ""

    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        for name, type_id in DETAIL_TYPE_IDS.items():
            self.tables["contactdetailtype"][type_id] = {"id": type_id, "name": name,
                                                         "active": 1}
        for name, status_id in APPOINTMENT_STATUS_IDS.items():
            self.tables["appointmentstatus"][status_id] = {"id": status_id, "name": name,
                                                           "active": 1}
        # record ids start above the lookup ids so the two never look alike
        self._ids = itertools.count(101)
    _throttle: list[int] = field(default_factory=list)
    _failures: list[int] = field(default_factory=list)
    _windows: dict[str, tuple[int, int]] = field(default_factory=dict)
    _expire_after: int | None = None
    _throttle_after: int = 0

    # -- lifecycle -----------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        paths = [*API_PATHS, *([REMINDER_PATH] if self.reminders else [])]
        return [web.post("/v1/oauth/access_token", self._token),
                *(web.get(path, self._list) for path in paths),
                web.route("*", "/{tail:.*}", self._not_found)]

    # -- test controls -------------------------------------------------------------------
    def now(self) -> int:
        return int(time.time() + self.offset)

    def advance(self, seconds: float) -> None:
        self.offset += seconds

    def expire_tokens(self) -> None:
        for token in self.tokens:
            self.tokens[token] = 0

    def expire_tokens_after(self, calls: int) -> None:
        """Expire every token once ``calls`` more API calls have been answered (mid-run)."""
        self._expire_after = calls

    def throttle(self, n: int, retry_after: int | None = None, *, after: int = 0) -> None:
        """Answer ``n`` API calls with 429, starting once ``after`` more calls were served."""
        self._throttle_after = after
        self._throttle.extend([retry_after if retry_after is not None else self.retry_after] * n)

    def deny(self, resource: str) -> None:
        """Answer 403 for ``resource`` whatever the token's scopes (a partner not granted it)."""
        self.denied.add(resource)

    def fail_next(self, n: int, status: int = 503) -> None:
        self._failures.extend([status] * n)

    def api_calls(self, path: str | None = None) -> list[tuple[str, str, dict[str, str]]]:
        return [r for r in self.requests if path is None or r[1] == path]

    # -- data ----------------------------------------------------------------------------
    def _put(self, resource: str, item: dict[str, Any]) -> dict[str, Any]:
        now = self.now()
        item.setdefault("id", next(self._ids))
        item.setdefault("active", 1)
        item.setdefault("created_at", now)
        item["modified_at"] = now
        self.tables[resource][item["id"]] = item
        return item

    def update(self, resource: str, item_id: int, **fields: Any) -> dict[str, Any]:
        item = self.tables[resource][item_id]
        item.update(fields)
        item["modified_at"] = self.now()
        return item

    def lookup(self, resource: str, name: str) -> int:
        for item in self.tables[resource].values():
            if item.get("name") == name:
                return item["id"]
        return self._put(resource, {"name": name})["id"]

    def add_contact(
        self, first_name: str, last_name: str, *, email: str | None = None,
        phone_home: str | None = None, phone_work: str | None = None,
        phone_mobile: str | None = None, address: dict[str, Any] | None = None,
        active: bool = True, **extra: Any,
    ) -> dict[str, Any]:
        contact = self._put("contact", {
            "code": None, "first_name": first_name, "last_name": last_name,
            "business_name": None, "is_business": 0, "is_customer": 1, "is_supplier": 0,
            "is_vet": 0, "is_syndicate": 0, "is_staff_member": 0, "stop_credit": "",
            "contact_detail_list": [], "address_physical": None, "address_postal": None,
            "ownership_id": None, "active": int(active), **extra,
        })
        details = [(DETAIL_EMAIL, "Email", email), (DETAIL_PHONE_HOME, "Home", phone_home),
                   (DETAIL_PHONE_WORK, "Work", phone_work),
                   (DETAIL_PHONE_MOBILE, "Mobile", phone_mobile)]
        for type_id, name, value in details:
            if value is not None:
                detail = self._put("contactdetail", {
                    "name": name, "value": value, "contact_id": contact["id"],
                    "contact_detail_type_id": type_id,
                })
                contact["contact_detail_list"].append(detail["id"])
        if address is not None:
            row = {"street_1": None, "street_2": None, "suburb": None, "city": None,
                   "region": None, "state": None, "post_code": None, "country_id": None}
            row.update(address)
            contact["address_postal"] = self._put("address", row)["id"]
        return contact

    def set_detail(self, contact_id: int, type_id: int, value: str) -> None:
        """Change a contact's email or phone: the detail row changes (and its modified_at);
        the contact itself is left alone, since nothing shows ezyVet moves its modified_at."""
        for detail in self.tables["contactdetail"].values():
            if detail["contact_id"] == contact_id and detail["contact_detail_type_id"] == type_id:
                self.update("contactdetail", detail["id"], value=value)
                break
        else:
            detail = self._put("contactdetail", {"name": "", "value": value,
                                                 "contact_id": contact_id,
                                                 "contact_detail_type_id": type_id})
            self.tables["contact"][contact_id]["contact_detail_list"].append(detail["id"])

    def set_address(self, contact_id: int, **fields: Any) -> None:
        """Change a contact's postal address row (its modified_at moves, the contact's not)."""
        address_id = self.tables["contact"][contact_id]["address_postal"]
        self.update("address", address_id, **fields)

    def add_animal(
        self, contact_id: int, name: str, *, species: str = "Canine", breed: str | None = None,
        sex: str | None = None, date_of_birth: int | None = None, active: bool = True,
        is_dead: bool = False, **extra: Any,
    ) -> dict[str, Any]:
        return self._put("animal", {
            "name": name, "code": None, "contact_id": contact_id,
            "species_id": self.lookup("species", species),
            "breed_id": self.lookup("breed", breed) if breed else None,
            "sex_id": self.lookup("sex", sex) if sex else None,
            "date_of_birth": date_of_birth, "is_dead": int(is_dead), "date_of_death": None,
            "death_reason": None, "is_hostile": 0, "microchip_number": None, "weight": None,
            "weight_unit": "kg", "active": int(active), **extra,
        })

    def add_appointment(
        self, animal_id: int, contact_id: int, start_at: int, *, type_name: str = "Consult",
        status_id: int = 1, duration: int = 900, **extra: Any,
    ) -> dict[str, Any]:
        return self._put("appointment", {
            "start_at": start_at, "duration": duration, "status_id": status_id,
            "type_id": self.lookup("appointmenttype", type_name), "animal_id": animal_id,
            "contact_id": contact_id, "consult_id": None, "cancellation_reason": None,
            "cancellation_reason_text": None, "resources": [], **extra,
        })

    def add_consult(self, animal_id: int, date: int, **extra: Any) -> dict[str, Any]:
        return self._put("consult", {"animal_id": animal_id, "date": date,
                                     "reason_for_visit": extra.pop("reason", None), **extra})

    def add_reminder(self, animal_id: int, description: str, due_at: int,
                     **extra: Any) -> dict[str, Any]:
        """A row for /v1/reminder, served only when the fake was built with ``reminders=True``."""
        return self._put("reminder", {"animal_id": animal_id, "description": description,
                                      "due_at": due_at, **extra})

    def inject_malformed(self, resource: str = "contact") -> dict[str, Any]:
        """An item no connector can take: no usable id, fields of the wrong type."""
        item = {"id": None, "active": "maybe", "first_name": ["not", "a", "name"],
                "modified_at": self.now(), "start_at": "soon", "date_of_birth": "yesterday"}
        # Kept under a key that sorts after every real id so paging is unaffected.
        self.tables[resource][10**12 + len(self.tables[resource])] = item
        return item

    # -- handlers ------------------------------------------------------------------------
    async def _token(self, request: web.Request) -> web.Response:
        if request.content_type == "application/json":
            body = await request.json()
        else:
            body = dict(await request.post())
        self.token_bodies.append(dict(body))
        ok = (body.get("client_id") == self.client_id
              and body.get("client_secret") == self.client_secret
              and body.get("partner_id") == self.partner_id
              and body.get("grant_type") == "client_credentials")
        if not ok:
            return web.json_response(
                messages_body("Client authentication failed", "invalid_client"), status=401)
        asked = frozenset(s for s in re.split(r"[,\s]+", str(body.get("scope") or "")) if s)
        self.token_requests += 1
        token = secrets.token_urlsafe(24)
        expires_at = self.now() + self.token_ttl
        self.tokens[token] = expires_at
        self.token_scopes[token] = asked or ALL_READ_SCOPES
        site = (str(body.get("partner_id")), str(body.get("site_uid") or ""))
        if self.one_token_per_site and site in self._site_tokens:
            self.tokens[self._site_tokens[site]] = 0
        self._site_tokens[site] = token
        expires_in = expires_at if self.expires_in_epoch else self.token_ttl
        return web.json_response(
            {"access_token": token, "token_type": "Bearer", "expires_in": expires_in}
        )

    async def _not_found(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path, dict(request.query)))
        return web.json_response(messages_body(f"Unknown endpoint {request.path}", "not_found"),
                                 status=404)

    def _rate_headers(self, path: str) -> tuple[dict[str, str], bool]:
        if self.rate_limit is None:
            return {"x-ratelimit-remaining": "1000", "x-ratelimit-reset": str(self.now() + 60)}, True
        now = self.now()
        start, count = self._windows.get(path, (now, 0))
        if now - start >= 60:
            start, count = now, 0
        count += 1
        self._windows[path] = (start, count)
        remaining = max(self.rate_limit - count, 0)
        headers = {"x-ratelimit-remaining": str(remaining), "x-ratelimit-reset": str(start + 60)}
        if count > self.rate_limit:
            headers["retry-after"] = str(start + 60 - now)
            return headers, False
        return headers, True

    async def _list(self, request: web.Request) -> web.Response:
        path = request.path
        self.requests.append((request.method, path, dict(request.query)))
        if self._throttle and self._throttle_after > 0:
            self._throttle_after -= 1
        elif self._throttle:
            wait = self._throttle.pop(0)
            return web.json_response(
                messages_body("Too many requests", "rate_limited"), status=429,
                headers={"retry-after": str(wait), "x-ratelimit-remaining": "0",
                         "x-ratelimit-reset": str(self.now() + wait)},
            )
        if self._failures:
            return web.json_response(messages_body("Service unavailable", "server_error"),
                                     status=self._failures.pop(0))
        if self._expire_after is not None:
            if self._expire_after <= 0:
                self.expire_tokens()
                self._expire_after = None
            else:
                self._expire_after -= 1
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip()
        if not auth.startswith("Bearer ") or self.tokens.get(token, 0) <= self.now():
            return web.json_response(
                messages_body("The access token is invalid or expired", "invalid_token"),
                status=401,
            )
        resource = API_PATHS.get(path) or "reminder"
        if f"read-{resource}" not in self.token_scopes.get(token, ()) or resource in self.denied:
            return web.json_response(
                messages_body(f"The access token does not grant read-{resource}", "forbidden"),
                status=403)
        headers, allowed = self._rate_headers(path)
        if not allowed:
            return web.json_response(messages_body("Too many requests", "rate_limited"),
                                     status=429, headers=headers)
        try:
            page = int(request.query.get("page", "1"))
            limit = int(request.query.get("limit", str(DEFAULT_LIMIT)))
            if page < 1 or not 1 <= limit <= MAX_LIMIT:
                raise FilterError(f"page must be >= 1 and limit 1..{MAX_LIMIT}")
            filters = {name: json.loads(value) if value[:1] in "{[\"" or value.isdigit()
                       else value
                       for name, value in request.query.items() if name not in ("page", "limit")}
            rows = [item for _key, item in sorted(self.tables[resource].items())
                    if all(_matches(item, name, spec) for name, spec in filters.items())]
        except (ValueError, json.JSONDecodeError) as err:
            return web.json_response(messages_body(str(err), "bad_request"), status=400,
                                     headers=headers)
        total = len(rows)
        chunk = rows[(page - 1) * limit: page * limit]
        meta = {
            "items_page": page,
            "items_page_total": max((total + limit - 1) // limit, 1),
            "items_page_size": limit,
            "items_total": total,
            "transaction_id": secrets.token_hex(8),
            "timestamp": self.now(),
        }
        return web.json_response({"meta": meta, "items": [{resource: item} for item in chunk],
                                  "messages": []}, headers=headers)
