"""Postcard channel over Lob's Postcards API (docs/providers/lob.md), config section
``[postcard]``.

A send is one ``POST {base_url}/postcards`` on the hub's shared aiohttp session: HTTP Basic with
the API key as username, a JSON body with the front and back HTML rendered from the
communication's templates, ``use_type`` from the category (marketing or operational), and the
communication's idempotency key as ``Idempotency-Key``, so a retried job gets the same postcard
back instead of paying for a second one. Lob remembers idempotency keys for 24 hours only: a
send whose first attempt is older than that first looks for the card it may already have
created, by the communication id in its metadata, and returns that card instead.

The US address is checked here first (required fields, 2-letter state, ZIP ``12345`` or
``12345-1234``, ``address_line1`` + ``address_line2`` at most 50 characters, name at most 40):
a postcard Lob would refuse is not worth a request, and one it would accept but cannot deliver
costs money.

Lob answers: ``failed_deliverability_strictness`` and ``address_length_exceeds_limit`` are the
recipient's address (``invalid_address``, permanent); ``foreign_return_address`` is the
practice's return address, a configuration error that must not mark the client's address
invalid: the card waits and retries, like a refused API key, while the operator fixes it;
other 4xx are ``rejected``; 408 (``request_timeout``), 429 and 5xx are transient, retried after
the rate-limit reset Lob gives (it spells the headers ``X-Rate-Limit-Reset`` in its prose and
``ratelimit-reset`` in its schema; both are read).

A ``postcard.returned_to_sender`` event marks the address invalid (the hub's postal key travels
in the postcard's metadata), so the next postcard to it is vetoed until the PIMS address changes.

The webhook ``/webhooks/lob`` checks ``Lob-Signature`` (hex HMAC-SHA256 of
``"{Lob-Signature-Timestamp}.{raw body}"`` with ``webhook_secret``) and refuses events more
than five minutes old or ahead. Whether the timestamp is in seconds or milliseconds is not
published; a value above 10^11 is read as milliseconds, anything else as seconds, which tells
the two apart for any date after 1973.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import math
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import aiohttp
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from hub.hookspecs import hookimpl
from hub.messaging import service
from hub.messaging.channel import ChannelError, OutboundMessage, SendResult
from hub.messaging.statuses import CommStatus

if TYPE_CHECKING:
    from hub.core import Hub

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/lob"
DEFAULT_BASE_URL = "https://api.lob.com/v1"
MAX_EVENT_AGE = 300.0  # seconds, either way
MILLISECONDS_ABOVE = 10**11
AUTH_RETRY_SECONDS = 600.0
DEFAULT_RATE_RETRY = 5.0  # Lob's message: "Please wait 5 seconds"

STATE = re.compile(r"^[A-Z]{2}$")
ZIP = re.compile(r"^\d{5}(-\d{4})?$")
#: Lob error codes about the recipient's address.
ADDRESS_CODES = frozenset({"failed_deliverability_strictness", "address_length_exceeds_limit"})
#: Lob error codes about the sender's (practice's) configuration, not the recipient.
CONFIG_CODES = frozenset({"foreign_return_address"})
#: Lob keeps an idempotency key this long; later retries look for the card first.
IDEMPOTENCY_WINDOW = timedelta(hours=24)
#: looked up a little early, for clock differences between the hub and Lob
IDEMPOTENCY_MARGIN = timedelta(minutes=30)

#: Lob event type → hub status. ``postcard.created`` confirms what the send already recorded;
#: render events and ``postcard.viewed`` (a QR scan) are not delivery states and are ignored.
EVENT_STATUS: Mapping[str, str] = {
    "postcard.created": "processed",
    "postcard.mailed": "mailed",
    "postcard.in_transit": "in_transit",
    "postcard.international_exit": "in_transit",
    "postcard.in_local_area": "in_local_area",
    "postcard.processed_for_delivery": "processed_for_delivery",
    "postcard.re-routed": "re_routed",
    "postcard.delivered": "delivered",
    "postcard.returned_to_sender": "returned_to_sender",
    "postcard.failed": "failed",
    "postcard.rejected": "failed",
    "postcard.deleted": "canceled",
}


class PostalAddress(BaseModel):
    """An inline US address as Lob takes it."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    company: str | None = None
    address_line1: str
    address_line2: str | None = None
    address_city: str
    address_state: str
    address_zip: str
    address_country: str = "US"


class PostcardConfig(BaseModel):
    """``[postcard]``: Lob credentials, the return address, the card size. The channel is off
    until ``api_key`` is set (an empty string counts as unset)."""

    model_config = ConfigDict(extra="forbid")

    api_key: SecretStr | None = Field(None, description="Lob secret key (test_... or live_...)")
    base_url: str = Field(DEFAULT_BASE_URL, description="Lob API base, ending in /v1")
    webhook_secret: SecretStr | None = Field(
        None, description="Lob webhook secret; without it /webhooks/lob refuses every event")
    from_address: PostalAddress | str | None = Field(
        None, description="return address: an inline US address or a Lob address id (adr_...)")
    size: Literal["4x6", "6x9", "6x11"] = "4x6"
    mail_type: Literal["usps_first_class", "usps_standard"] = "usps_first_class"
    marketing_categories: list[str] = Field(
        default_factory=lambda: ["marketing", "loyalty", "survey"],
        description="categories sent with use_type=marketing; the rest are operational")
    timeout: float = Field(30.0, gt=0)

    @field_validator("api_key", "webhook_secret", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @model_validator(mode="after")
    def _check(self) -> PostcardConfig:
        key = self.api_key.get_secret_value() if self.api_key else ""
        if key and key.endswith("_pub"):
            raise ValueError("api_key is a publishable key (…_pub), which cannot create mail; "
                             "use the secret test_… or live_… key")
        if self.mail_type == "usps_standard" and self.size == "4x6":
            raise ValueError("mail_type usps_standard is not available for 4x6 postcards")
        if isinstance(self.from_address, str) and not self.from_address.startswith("adr_"):
            raise ValueError("from_address must be an address table or a Lob id adr_...")
        if isinstance(self.from_address, PostalAddress):
            problem = address_problem(self.from_address.model_dump())
            if problem:
                raise ValueError(f"from_address: {problem}")
        return self

    @property
    def configured(self) -> bool:
        return bool(self.api_key and self.api_key.get_secret_value())


def address_problem(address: Mapping[str, Any] | None) -> str | None:
    """Why Lob would refuse (or could not deliver to) this US address, or None when it is fine.

    Checks what can be checked without a verification call: required fields, lengths, the
    state and ZIP formats, and the 50-character limit on the two address lines together.
    """
    if not address:
        return "no postal address"
    name = (address.get("name") or "").strip()
    company = (address.get("company") or "").strip()
    if not name and not company:
        return "name (or company) is required"
    for key, value in (("name", name), ("company", company)):
        if len(value) > 40:
            return f"{key} is longer than 40 characters"
    country = (address.get("address_country") or "US").strip().upper()
    if country not in ("US", "USA", "UNITED STATES"):
        return f"only US addresses are supported, got country {country!r}"
    line1 = (address.get("address_line1") or "").strip()
    line2 = (address.get("address_line2") or "").strip()
    if not line1:
        return "address_line1 is required"
    if len(line1) + len(line2) > 50:
        return "address_line1 and address_line2 together exceed 50 characters"
    if not (address.get("address_city") or "").strip():
        return "address_city is required"
    state = (address.get("address_state") or "").strip().upper()
    if not STATE.match(state):
        return f"address_state must be a 2-letter state code, got {state!r}"
    zip_code = (address.get("address_zip") or "").strip()
    if not ZIP.match(zip_code):
        return f"address_zip must be 12345 or 12345-1234, got {zip_code!r}"
    return None


def lob_address(address: Mapping[str, Any]) -> dict[str, str]:
    """The address as sent to Lob: trimmed, empty fields left out, country US."""
    out = {key: str(address[key]).strip() for key in (
        "name", "company", "address_line1", "address_line2", "address_city", "address_state",
        "address_zip") if address.get(key) and str(address[key]).strip()}
    out["address_state"] = out["address_state"].upper()
    out["address_country"] = "US"
    return out


def event_timestamp(value: str) -> float | None:
    """``Lob-Signature-Timestamp`` in seconds since the epoch (sent in seconds or ms)."""
    try:
        number = float(value)
    except ValueError:
        return None
    # "nan" compares false with everything, so it would pass the age check: only finite numbers.
    if not math.isfinite(number):
        return None
    return number / 1000 if number > MILLISECONDS_ABOVE else number


def reset_delay(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds until Lob's rate-limit window resets, from either header spelling (or
    Retry-After). Reset values are epoch seconds; small values are taken as a delay."""
    for name in ("Retry-After", "X-Rate-Limit-Reset", "ratelimit-reset"):
        value = headers.get(name)
        if value is None:
            continue
        try:
            number = float(value)
        except ValueError:
            continue
        if name != "Retry-After" and number > 10**9:
            number -= now
        return max(number, 1.0)
    return None


class PostcardChannel:
    """The ``postcard`` channel (see the module docstring)."""

    name = "postcard"
    #: how its webhooks are signed, for the API description (hub/web/openapi.py)
    security_schemes = {
        "lobSignature": {"type": "apiKey", "in": "header", "name": "Lob-Signature",
                         "description": "Lob's HMAC-SHA256 of `{Lob-Signature-Timestamp}.{body}` on "
                                        "the postcard tracking webhook (/webhooks/lob)."},
    }

    def __init__(self, hub: Hub, config: PostcardConfig) -> None:
        assert config.api_key is not None
        self.hub = hub
        self.config = config
        key = config.api_key.get_secret_value()
        self._auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
        self._secret = (config.webhook_secret.get_secret_value().encode()
                        if config.webhook_secret else None)
        self._last_error: str | None = None

    @property
    def sender_id(self) -> str:
        """This hub, as named in its postcards' metadata (Lob: at most 500 characters)."""
        return self.hub.config.hub.public_url.rstrip("/")[:500]

    def use_type(self, category: str) -> str:
        return "marketing" if category in self.config.marketing_categories else "operational"

    def body(self, message: OutboundMessage) -> dict[str, Any]:
        body: dict[str, Any] = {
            "description": f"VetHub communication {message.communication_id}",
            "to": lob_address(message.postal_address or {}),
            "front": message.postcard_front_html,
            "back": message.postcard_back_html,
            "use_type": self.use_type(message.category),
            "size": self.config.size,
            "mail_type": self.config.mail_type,
            "metadata": {"communication_id": str(message.communication_id),
                         "category": message.category},
        }
        # which hub mailed it: another hub on the same Lob account has its own communication ids
        body["metadata"]["sender"] = self.sender_id
        if message.practice_id is not None:
            body["metadata"]["practice_id"] = str(message.practice_id)
        # Lob echoes metadata in every event: a returned card names the address to suppress
        # without the webhook reading communications (Lob rewrites the address it returns).
        key = service.postal_suppression_address(message.postal_address)
        if key:
            body["metadata"]["postal_key"] = key
        sender = self.config.from_address
        if isinstance(sender, PostalAddress):
            body["from"] = lob_address(sender.model_dump())
        elif sender:
            body["from"] = sender
        return body

    async def send(self, message: OutboundMessage) -> SendResult:
        problem = address_problem(message.postal_address)
        if problem:
            raise ChannelError(f"postal address not mailable: {problem}",
                               reason="invalid_address", permanent=True)
        if not message.postcard_front_html or not message.postcard_back_html:
            raise ChannelError("postcard needs front and back HTML", reason="rejected",
                               permanent=True)
        if await self._key_may_have_expired(message):
            existing = await self.find_created(message.communication_id)
            if existing is not None:
                log.info("postcard: communication %s was already mailed as %s (found by "
                         "metadata; its idempotency key had expired)", message.communication_id,
                         existing["id"])
                return self._result(existing, recovered=True)
        headers = {"Authorization": self._auth, "Idempotency-Key": message.idempotency_key,
                   "Accept": "application/json"}
        url = self.config.base_url.rstrip("/") + "/postcards"
        http = self.hub.http
        assert http is not None  # the hub opens its HTTP session at start; channels send only then
        try:
            async with http.post(
                    url, json=self.body(message), headers=headers,
                    timeout=aiohttp.ClientTimeout(total=self.config.timeout)) as resp:
                text = await resp.text()
                status, resp_headers = resp.status, resp.headers
        except (aiohttp.ClientError, TimeoutError) as err:
            self._last_error = f"network: {err!r}"
            raise ChannelError(f"Lob unreachable: {err!r}", reason="transient",
                               permanent=False) from err
        try:
            payload = json.loads(text) if text else {}
        except ValueError:
            payload = {}
        if status == 200 and isinstance(payload, dict) and payload.get("id"):
            self._last_error = None
            return self._result(payload)
        raise self._error(status, payload, resp_headers)

    def _result(self, payload: dict[str, Any], *, recovered: bool = False) -> SendResult:
        if payload.get("status") == "failed":
            raise ChannelError(f"Lob could not render postcard {payload['id']}: "
                               f"{failure_text(payload.get('failure_reason'))}",
                               reason="rejected", permanent=True)
        detail = {"expected_delivery_date": payload.get("expected_delivery_date"),
                  "send_date": payload.get("send_date"), "use_type": payload.get("use_type")}
        if recovered:
            detail["recovered_by_metadata"] = True
        return SendResult(provider_id=payload["id"], status=CommStatus.PROCESSED, detail=detail)

    async def _key_may_have_expired(self, message: OutboundMessage) -> bool:
        async with self.hub.sessionmaker() as session:
            first = await service.first_attempt_at(session, message.communication_id)
        if first is None:
            return False
        age = self.hub.clock.now() - first
        return age >= IDEMPOTENCY_WINDOW - IDEMPOTENCY_MARGIN

    async def find_created(self, communication_id: int) -> dict[str, Any] | None:
        """The postcard this hub already created for a communication, found by its metadata,
        or None. Raises a transient ChannelError when Lob cannot be asked: sending blind could
        mail a second card."""
        url = self.config.base_url.rstrip("/") + "/postcards"
        params = {"metadata[communication_id]": str(communication_id), "limit": "10"}
        headers = {"Authorization": self._auth, "Accept": "application/json"}
        http = self.hub.http
        assert http is not None  # the hub opens its HTTP session at start; channels send only then
        try:
            async with http.get(
                    url, params=params, headers=headers,
                    timeout=aiohttp.ClientTimeout(total=self.config.timeout)) as resp:
                status, resp_headers, text = resp.status, resp.headers, await resp.text()
        except (aiohttp.ClientError, TimeoutError) as err:
            raise ChannelError(f"Lob unreachable while looking for an earlier card: {err!r}",
                               reason="transient", permanent=False) from err
        try:
            payload = json.loads(text) if text else {}
        except ValueError:
            payload = {}
        if status != 200 or not isinstance(payload, dict):
            refused = self._error(status, payload, resp_headers)
            raise ChannelError(f"looking for an earlier card: {refused.message}",
                               reason="transient", permanent=False, code=refused.code,
                               retry_after=refused.retry_after)
        for card in payload.get("data") or []:
            metadata = card.get("metadata") or {}
            if (metadata.get("communication_id") == str(communication_id)
                    and metadata.get("sender") == self.sender_id and not card.get("deleted")):
                return card
        return None

    def _error(self, status: int, payload: Any, headers: Mapping[str, str]) -> ChannelError:
        error = payload.get("error", {}) if isinstance(payload, dict) else {}
        code = error.get("code") if isinstance(error, dict) else None
        text = f"Lob {status} {code}: {error.get('message') if isinstance(error, dict) else ''}"
        now = self.hub.clock.now().timestamp()
        if status in (408, 429) or status >= 500:
            self._last_error = text
            delay = reset_delay(headers, now)
            return ChannelError(text, reason="transient", permanent=False, code=code,
                                retry_after=delay if delay is not None else (
                                    DEFAULT_RATE_RETRY if status == 429 else None))
        if status in (401, 403):
            self._last_error = text
            log.error("postcard: Lob refused the [postcard] api_key; postcards wait and retry")
            return ChannelError(text, reason="transient", permanent=False, code=code,
                                retry_after=AUTH_RETRY_SECONDS)
        if status == 409:  # a concurrent request with the same Idempotency-Key [U]
            return ChannelError(text, reason="transient", permanent=False, code=code)
        if code in CONFIG_CODES:
            self._last_error = text
            log.error("postcard: Lob refused the practice's return address (%s); fix "
                      "[postcard] from_address, postcards wait and retry", code)
            return ChannelError(text, reason="transient", permanent=False, code=code,
                                retry_after=AUTH_RETRY_SECONDS)
        if code in ADDRESS_CODES:
            return ChannelError(text, reason="invalid_address", permanent=True, code=code)
        return ChannelError(text, reason="rejected", permanent=True, code=code)

    # -- webhook -------------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        return [web.post(WEBHOOK_PATH, self.webhook)]

    def verify(self, timestamp: str, signature: str, raw: bytes) -> str | None:
        """Why an event must be refused, or None when it is authentic and fresh."""
        if self._secret is None:
            return "no [postcard] webhook_secret configured"
        if not timestamp or not signature:
            return "unsigned"
        at = event_timestamp(timestamp)
        if at is None:
            return "bad timestamp"
        if abs(self.hub.clock.now().timestamp() - at) > MAX_EVENT_AGE:
            return "stale timestamp"
        expected = hmac.new(self._secret, timestamp.encode() + b"." + raw,
                            hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature.strip().lower()):
            return "bad signature"
        return None

    async def webhook(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        refusal = self.verify(request.headers.get("Lob-Signature-Timestamp", ""),
                              request.headers.get("Lob-Signature", ""), raw)
        if refusal:
            log.warning("postcard: refused Lob event from %s: %s", request.remote, refusal)
            return web.Response(status=403, text=refusal)
        try:
            event = json.loads(raw)
            event_type = event["event_type"]["id"]
        except (ValueError, KeyError, TypeError):
            return web.Response(status=400, text="not a Lob event")
        status = EVENT_STATUS.get(event_type)
        postcard = event.get("body") if isinstance(event.get("body"), dict) else {}
        provider_id = event.get("reference_id") or postcard.get("id")
        if status is None or not provider_id:
            log.info("postcard: ignored Lob event %s for %s", event_type, provider_id)
            return web.Response(status=200)
        tracking = (postcard.get("tracking_events") or [{}])[-1]
        detail = {"event_id": event.get("id"), "tracking_event": tracking.get("name"),
                  "location": tracking.get("location")}
        if postcard.get("failure_reason"):
            detail["failure_reason"] = failure_text(postcard["failure_reason"])
        async with self.hub.transaction() as session:
            await service.record_status(
                session, self.hub, channel=self.name, provider_id=str(provider_id),
                status=status, provider_status=event_type,
                at=_parse_time(event.get("date_created")) or self.hub.clock.now(),
                detail={k: v for k, v in detail.items() if v is not None})
            postal = (postcard.get("metadata") or {}).get("postal_key")
            if status == CommStatus.RETURNED_TO_SENDER and postal:
                await service.mark_address_invalid(
                    session, self.hub, kind="postal", address=str(postal),
                    reason=f"postcard {provider_id} returned to sender", source="bounce")
        return web.Response(status=200)

    async def health(self) -> tuple[bool, str]:
        if self._last_error:
            return False, f"lob: last send failed: {self._last_error}"
        if self._secret is None:
            return True, "lob: sending; no webhook_secret, so no tracking events are accepted"
        return True, f"lob: sending {self.config.size} postcards"

    async def close(self) -> None:  # nothing of its own: the HTTP session is the hub's
        return None


def failure_text(reason: Any) -> str:
    """Lob's ``failure_reason`` is an object; its text, whatever fields it carries."""
    if isinstance(reason, dict):
        parts = [str(reason[k]) for k in ("code", "message", "description") if reason.get(k)]
        return ": ".join(parts) or json.dumps(reason, sort_keys=True)
    return str(reason)


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None


@hookimpl
def vethub_config_sections() -> dict[str, type[BaseModel]]:
    return {"postcard": PostcardConfig}


@hookimpl
def vethub_channels(hub: Hub) -> list[PostcardChannel]:
    config: PostcardConfig | None = hub.config.section("postcard")
    if config is None:
        log.info("postcard channel off: no [postcard] section")
        return []
    if not config.configured:
        log.info("postcard channel off: no credentials ([postcard] api_key unset)")
        return []
    if config.webhook_secret is None:
        log.warning("postcard: no [postcard] webhook_secret; Lob tracking events will be refused")
    if config.from_address is None:
        log.info("postcard: no [postcard] from_address; Lob prints no return address")
    return [PostcardChannel(hub, config)]
