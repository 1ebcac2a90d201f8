"""A fake Lob print-and-mail server (postcards), built to the facts in docs/providers/lob.md.

Serves ``POST /v1/postcards`` (JSON or form-encoded body, HTTP Basic with the API key as
username and an empty password) and ``GET /v1/postcards`` (a list, filtered by
``metadata[key]=value``), and sends the hub signed webhook events.

Like Lob it refuses: a publishable key (``…_pub``) with 403 ``publishable_key_not_allowed``;
metadata that is not at most 20 flat string pairs (keys up to 40 characters, values up to 500,
no double quote or backslash); a recipient it cannot deliver to (an ``address_line1`` in
``undeliverable``) with 422 ``failed_deliverability_strictness``; a non-US return address with
422 ``foreign_return_address``. ``fail_next(n, status=408)`` answers ``request_timeout``.
Idempotency keys are remembered for 24 hours on the fake's ``clock``; a retry after that creates
a second card, as Lob would.

For tests to inspect: ``postcards`` (by id), ``requests`` (every create: body, headers, status).
Controls: ``fail_next(n, status=500)``, ``rate_limit_next(n, reset_in=5)`` and
``rate_limit_headers`` ("x" for ``X-Rate-Limit-*``, "ietf" for ``ratelimit-*``, "both"), since
Lob's prose and its schema disagree on the spelling. The real limit (150 requests per 5 s per
key and endpoint) is enforced too, against ``clock`` (``time.time`` by default).
``fail_render(postcard_id)`` turns a card ``failed`` with a ``failure_reason`` object.

Events: ``send_event(url, postcard_id, "postcard.delivered")`` POSTs an event signed with
``Lob-Signature`` = hex HMAC-SHA256 of ``"{timestamp}.{raw body}"`` keyed with the webhook secret
and ``Lob-Signature-Timestamp``. Whether Lob's timestamp is in seconds or milliseconds is not
published; ``timestamp_unit`` picks one ("ms" by default, as the public handlers read it).
Tracking events carry ``type: "normal"``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import parse_qsl

from aiohttp import ClientResponse, web

from hub.testing.loopback import LoopbackServer

RATE_LIMIT = 150
RATE_WINDOW = 5.0
IDEMPOTENCY_SECONDS = 24 * 3600
STATE = re.compile(r"^[A-Za-z]{2}$")
ZIP = re.compile(r"^\d{5}(-\d{4})?$")
SIZES = ("4x6", "6x9", "6x11")
TRACKING_NAMES = {
    "postcard.mailed": "Mailed",
    "postcard.in_transit": "In Transit",
    "postcard.in_local_area": "In Local Area",
    "postcard.processed_for_delivery": "Processed for Delivery",
    "postcard.delivered": "Delivered",
    "postcard.re-routed": "Re-Routed",
    "postcard.returned_to_sender": "Returned to Sender",
    "postcard.international_exit": "International Exit",
}
EVENT_TYPES = frozenset(TRACKING_NAMES) | {
    "postcard.created", "postcard.rejected", "postcard.rendered_pdf",
    "postcard.rendered_thumbnails", "postcard.deleted", "postcard.failed", "postcard.viewed",
}


def iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def lob_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def sign_event(secret: str, timestamp: str, body: bytes) -> str:
    """``Lob-Signature``: hex HMAC-SHA256 of ``"{timestamp}.{raw body}"``."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class LobError(Exception):
    """An error the fake answers with, in Lob's error body shape."""
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "status_code": self.status, "code": self.code}}


def metadata_problem(metadata: Any) -> str | None:
    """Why Lob refuses this ``metadata``: at most 20 flat string pairs, keys up to 40
    characters, values up to 500, no double quote or backslash."""
    if not isinstance(metadata, dict):
        return "metadata must be an object"
    if len(metadata) > 20:
        return "metadata must have at most 20 keys"
    for key, value in metadata.items():
        if not isinstance(value, str):
            return f"metadata.{key} must be a string"
        if len(key) > 40:
            return f"metadata key {key[:40]}... is longer than 40 characters"
        if len(value) > 500:
            return f"metadata.{key} is longer than 500 characters"
        if any(ch in key + value for ch in '"\\'):
            return f"metadata.{key} must not contain a double quote or backslash"
    return None


def _unflatten(form: dict[str, str]) -> dict[str, Any]:
    """Form bodies name nested fields ``to[name]``; turn them into nested dicts."""
    out: dict[str, Any] = {}
    for key, value in form.items():
        parts = re.findall(r"[^\[\]]+", key)
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


@dataclass
class CreateRequest:
    """One postcard request the fake received and what it answered, for assertions."""
    body: Any
    headers: dict[str, str]
    query: dict[str, str]
    status: int
    response: dict[str, Any]


@dataclass
class FakeLob(LoopbackServer):
    """``async with FakeLob() as lob:`` starts it on 127.0.0.1 port 0; ``lob.base_url`` ends in /v1."""

    api_key: str = field(default_factory=lambda: "test_" + secrets.token_hex(12))
    webhook_secret: str = field(default_factory=lambda: secrets.token_hex(16))
    rate_limit_headers: str = "both"  # "x" | "ietf" | "both"
    timestamp_unit: str = "ms"  # "ms" | "s"
    clock: Callable[[], float] = time.time
    postcards: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[CreateRequest] = field(default_factory=list)
    events: list[tuple[str, dict[str, Any], int]] = field(default_factory=list)
    #: recipient address_line1 values (compared upper-case) Lob cannot deliver to
    undeliverable: set[str] = field(default_factory=lambda: {"1 NOWHERE LN"})
    list_requests: list[dict[str, str]] = field(default_factory=list)
    _idempotent: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)
    _faults: list[tuple[int, str, str, float | None]] = field(default_factory=list)
    _hits: list[float] = field(default_factory=list)
    base_url: str = ""

    base_path: ClassVar[str] = "/v1"

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/postcards", self._create), web.get("/v1/postcards", self._list)]

    @property
    def publishable_key(self) -> str:
        """The publishable twin of ``api_key`` (refused for creating mail)."""
        return self.api_key + "_pub"

    # -- controls --------------------------------------------------------------------------
    def fail_next(self, n: int = 1, *, status: int = 500, code: str | None = None,
                  message: str | None = None) -> None:
        """Make the next ``n`` creates fail with ``status`` and Lob's error body (any status:
        5xx storms, or a 422 the fake's own checks would not produce)."""
        default = {408: "request_timeout", 422: "invalid",
                   503: "service_unavailable"}.get(status, "internal_server_error")
        self._faults.extend([(status, code or default, message or "Injected failure", None)] * n)

    def rate_limit_next(self, n: int = 1, *, reset_in: float = 5) -> None:
        self._faults.extend([(429, "rate_limit_exceeded", "Rate limit exceeded. Please wait 5 "
                              "seconds and try your request again.", reset_in)] * n)

    # -- create ----------------------------------------------------------------------------
    def _limit_headers(self, remaining: int, reset_at: float) -> dict[str, str]:
        values = {"limit": str(RATE_LIMIT), "remaining": str(max(remaining, 0)),
                  "reset": str(int(reset_at))}
        headers: dict[str, str] = {}
        if self.rate_limit_headers in ("x", "both"):
            headers.update({f"X-Rate-Limit-{k.title()}": v for k, v in values.items()})
        if self.rate_limit_headers in ("ietf", "both"):
            headers.update({f"ratelimit-{k}": v for k, v in values.items()})
        return headers

    async def _create(self, request: web.Request) -> web.Response:
        now = self.clock()
        self._hits = [t for t in self._hits if t > now - RATE_WINDOW]
        self._hits.append(now)
        reset_at = (self._hits[0] + RATE_WINDOW) if self._hits else now + RATE_WINDOW
        headers = self._limit_headers(RATE_LIMIT - len(self._hits), reset_at)
        raw = await request.read()
        body: Any = None
        try:
            if self._faults:
                status, code, message, reset_in = self._faults.pop(0)
                if reset_in is not None:
                    headers = self._limit_headers(0, now + reset_in)
                raise LobError(status, code, message)
            if len(self._hits) > RATE_LIMIT:
                raise LobError(429, "rate_limit_exceeded", "Rate limit exceeded. Please wait 5 "
                               "seconds and try your request again.")
            key = self._auth(request)
            body = self._parse(request, raw)
            idem = self._idempotency_key(request)
            scope = (key.split("_", 1)[0], idem) if idem else None
            remembered = self._idempotent.get(scope) if scope else None
            if remembered and now - remembered[1] < IDEMPOTENCY_SECONDS:
                result = self.postcards[remembered[0]]
            else:
                result = self._validate_and_build(body)
                self.postcards[result["id"]] = result
                if scope:
                    self._idempotent[scope] = (result["id"], now)
            status = 200
        except LobError as err:
            status, result = err.status, err.body()
        self.requests.append(CreateRequest(body, dict(request.headers), dict(request.query),
                                           status, result))
        return web.json_response(result, status=status, headers=headers)

    def _auth(self, request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        user = ""
        if header.startswith("Basic "):
            try:
                user = base64.b64decode(header[6:]).decode().partition(":")[0]
            except (ValueError, UnicodeDecodeError):
                user = ""
        if user and secrets.compare_digest(user, self.publishable_key):
            raise LobError(403, "publishable_key_not_allowed",
                           "Publishable API keys cannot be used for this request.")
        if not user or not secrets.compare_digest(user, self.api_key):
            raise LobError(401, "unauthorized", "Your API key is not valid. Please sign up on "
                           "lob.com to get a valid api key.")
        return user

    def _parse(self, request: web.Request, raw: bytes) -> dict[str, Any]:
        if request.content_type == "application/json":
            try:
                body = json.loads(raw)
            except ValueError as err:
                raise LobError(400, "bad_request", "Invalid JSON body.") from err
            if not isinstance(body, dict):
                raise LobError(422, "invalid", "body must be an object")
            return body
        if request.content_type == "application/x-www-form-urlencoded":
            return _unflatten(dict(parse_qsl(raw.decode(), keep_blank_values=True)))
        raise LobError(415, "unsupported_media_type", "Unsupported content type.")

    def _idempotency_key(self, request: web.Request) -> str | None:
        header = request.headers.get("Idempotency-Key")
        query = request.query.get("idempotency_key")
        if header and query:
            # §2: "not both (sending both fails)"; the exact code is [U].
            raise LobError(422, "invalid", "Idempotency-Key header and idempotency_key query "
                           "parameter cannot both be provided.")
        key = header or query
        if key is not None and len(key) > 256:
            raise LobError(422, "invalid", "idempotency key must be at most 256 characters")
        return key

    def _address(self, value: Any, field_name: str, *, check_length: bool) -> dict[str, Any]:
        if isinstance(value, str):
            if value.startswith("adr_"):
                return {"id": value, "object": "address"}
            raise LobError(422, "invalid", f"{field_name} must be an address id or object")
        if not isinstance(value, dict):
            raise LobError(422, "invalid", f"{field_name} is required")
        name, company = value.get("name"), value.get("company")
        if not name and not company:
            raise LobError(422, "invalid", f"{field_name}.name or {field_name}.company is required")
        for key in ("name", "company"):
            if value.get(key) and len(value[key]) > 40:
                raise LobError(422, "invalid",
                               f"{field_name}.{key} length must be less than or equal to 40 "
                               "characters long")
        line1 = value.get("address_line1") or ""
        line2 = value.get("address_line2") or ""
        if not line1:
            raise LobError(422, "invalid", f"{field_name}.address_line1 is required")
        if len(line1) > 64:
            raise LobError(422, "invalid", f"{field_name}.address_line1 must be at most 64 "
                           "characters")
        country = (value.get("address_country") or "US").upper()
        if country == "US":
            for key in ("address_city", "address_state", "address_zip"):
                if not value.get(key):
                    raise LobError(422, "invalid", f"{field_name}.{key} is required")
            if not STATE.match(value["address_state"]):
                raise LobError(422, "invalid", f"{field_name}.address_state must be a 2 letter "
                               "state code")
            if not ZIP.match(value["address_zip"]):
                raise LobError(422, "invalid", f"{field_name}.address_zip must be in a valid "
                               "ZIP code format")
            if check_length and len(line1) + len(line2) > 50:
                raise LobError(422, "address_length_exceeds_limit",
                               "The combined length of address_line1 and address_line2 must not "
                               "exceed 50 characters.")
        now = iso(datetime.now(UTC))
        zip_code = value.get("address_zip") or ""
        return {
            "id": lob_id("adr"),
            "name": (name or "").upper() or None,
            "company": (company or "").upper() or None,
            "address_line1": line1.upper(),
            "address_line2": line2.upper() or None,
            "address_city": (value.get("address_city") or "").upper(),
            "address_state": (value.get("address_state") or "").upper(),
            "address_zip": zip_code if "-" in zip_code or country != "US" else zip_code + "-0001",
            "address_country": "UNITED STATES" if country == "US" else country,
            "phone": value.get("phone"),
            "email": value.get("email"),
            "description": value.get("description"),
            "metadata": value.get("metadata") or {},
            "object": "address",
            "date_created": now,
            "date_modified": now,
            "recipient_moved": False,
        }

    def _validate_and_build(self, body: dict[str, Any]) -> dict[str, Any]:
        for key in ("to", "front", "back"):
            if body.get(key) in (None, ""):
                raise LobError(422, "invalid", f"{key} is required")
        if "use_type" not in body:
            raise LobError(422, "invalid", "use_type is required")
        use_type = body["use_type"]
        if use_type is None or use_type == "":
            raise LobError(422, "mail_use_type_can_not_be_null",
                           "use_type cannot be null without an account default")
        if use_type not in ("marketing", "operational"):
            raise LobError(422, "invalid", "use_type must be one of [marketing, operational]")
        size = body.get("size", "4x6")
        if size not in SIZES:
            raise LobError(422, "invalid", f"size must be one of {list(SIZES)}")
        mail_type = body.get("mail_type", "usps_first_class")
        if mail_type not in ("usps_first_class", "usps_standard"):
            raise LobError(422, "invalid", "mail_type must be usps_first_class or usps_standard")
        if mail_type == "usps_standard" and size == "4x6":
            raise LobError(422, "invalid", "usps_standard is not available for 4x6 postcards")
        metadata = body.get("metadata") or {}
        problem = metadata_problem(metadata)
        if problem:
            raise LobError(422, "invalid", problem)
        to = self._address(body["to"], "to", check_length=True)
        if to.get("address_line1") in self.undeliverable:
            raise LobError(422, "failed_deliverability_strictness",
                           "The address does not meet the account's deliverability strictness.")
        international = isinstance(body["to"], dict) and (
            body["to"].get("address_country") or "US").upper() != "US"
        sender = None
        if body.get("from") is not None:
            if isinstance(body["from"], dict) and (
                    body["from"].get("address_country") or "US").upper() not in ("US", "USA"):
                raise LobError(422, "foreign_return_address",
                               "The return address must be a US address.")
            sender = self._address(body["from"], "from", check_length=False)
        elif international:
            raise LobError(422, "invalid", "from is required for international postcards")
        now = datetime.now(UTC)
        pid = lob_id("psc")
        send_date = body.get("send_date") or iso(now)
        return {
            "id": pid,
            "object": "postcard",
            "description": body.get("description"),
            "metadata": metadata,
            "to": to,
            "from": sender,
            "url": f"https://lob-assets.com/postcards/{pid}.pdf?version=v1&expires="
                   f"{int(now.timestamp()) + 30 * 86400}&signature={secrets.token_hex(16)}",
            "carrier": "USPS",
            "front_template_id": body["front"] if str(body["front"]).startswith("tmpl_") else None,
            "back_template_id": body["back"] if str(body["back"]).startswith("tmpl_") else None,
            "tracking_events": [],
            "size": size,
            "mail_type": mail_type,
            "merge_variables": body.get("merge_variables"),
            "thumbnails": [],
            "expected_delivery_date": (date.today() + timedelta(days=5)).isoformat(),
            "date_created": iso(now),
            "date_modified": iso(now),
            "send_date": send_date,
            "use_type": use_type,
            "fsc": bool(body.get("fsc", False)),
            "status": "processed",
            "failure_reason": None,
            "deleted": False,
        }

    # -- events ----------------------------------------------------------------------------
    def event_body(self, postcard_id: str, event_type: str) -> dict[str, Any]:
        """An event as Lob sends it; tracking events are appended to the postcard first."""
        if event_type not in EVENT_TYPES:
            raise ValueError(f"unknown postcard event type {event_type!r}")
        postcard = self.postcards[postcard_id]
        now = iso(datetime.now(UTC))
        if event_type in TRACKING_NAMES:
            postcard["tracking_events"].append({
                "id": lob_id("evnt"), "type": "normal",
                "name": TRACKING_NAMES[event_type], "location": "94107", "time": now,
                "date_created": now, "date_modified": now, "object": "tracking_event",
            })
        return {
            "id": lob_id("evt"),
            "body": json.loads(json.dumps(postcard)),
            "reference_id": postcard_id,
            "event_type": {"id": event_type, "enabled_for_test": True, "resource": "postcards",
                           "object": "event_type"},
            "date_created": now,
            "object": "event",
        }

    def fail_render(self, postcard_id: str) -> dict[str, Any]:
        """The card could not be rendered: ``status: failed`` and a ``failure_reason`` object
        (its inner field names are assumed)."""
        postcard = self.postcards[postcard_id]
        postcard["status"] = "failed"
        postcard["failure_reason"] = {"code": "asset_render_error",
                                      "message": "The front HTML could not be rendered."}
        return postcard

    async def _list(self, request: web.Request) -> web.Response:
        self.list_requests.append(dict(request.query))
        try:
            self._auth(request)
        except LobError as err:
            return web.json_response(err.body(), status=err.status)
        wanted = {key[len("metadata["):-1]: value for key, value in request.query.items()
                  if key.startswith("metadata[") and key.endswith("]")}
        limit = int(request.query.get("limit", "10"))
        cards = [p for p in self.postcards.values()
                 if all(p["metadata"].get(k) == v for k, v in wanted.items())]
        cards.sort(key=lambda p: p["date_created"], reverse=True)
        return web.json_response({"data": cards[:limit], "object": "list", "next_url": None,
                                  "previous_url": None, "count": len(cards[:limit])})

    def timestamp(self, at: float | None = None) -> str:
        at = self.clock() if at is None else at
        return str(int(at * 1000)) if self.timestamp_unit == "ms" else str(int(at))

    async def send_event(self, url: str, postcard_id: str, event_type: str, *,
                         timestamp: str | None = None, secret: str | None = None,
                         signature: str | None = None, signed: bool = True,
                         body: dict[str, Any] | None = None) -> ClientResponse:
        """POST an event to the hub. ``timestamp`` (a string, as sent) backdates it; ``secret``
        signs with another key and ``signature`` replaces the signature (forgeries);
        ``signed=False`` omits both headers. The response body is read before returning."""
        assert self._session is not None, "FakeLob not started"
        event = body if body is not None else self.event_body(postcard_id, event_type)
        raw = json.dumps(event).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "Lob-Webhooks"}
        if signed:
            ts = timestamp or self.timestamp()
            headers["Lob-Signature-Timestamp"] = ts
            headers["Lob-Signature"] = signature or sign_event(secret or self.webhook_secret,
                                                               ts, raw)
        async with self._session.post(url, data=raw, headers=headers) as resp:
            await resp.read()
        self.events.append((url, event, resp.status))
        return resp
