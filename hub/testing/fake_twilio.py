"""A fake Twilio Programmable Messaging server, built to the facts in docs/providers/twilio.md.

It serves the one call the hub makes (``POST /2010-04-01/Accounts/{sid}/Messages.json``) the way
twilio-python 9.x expects it, and it drives the hub's webhooks the way Twilio does: status
callbacks and inbound messages, form-encoded and signed with ``X-Twilio-Signature`` exactly as
Twilio's servers sign them: with the Auth Token (HMAC-SHA1), or, once ``use_shared_key(key_id,
secret)`` is called (an account that turned shared-key signing on), with that key (HMAC-SHA256)
and the ``X-Twilio-Webhooks-Signature-Settings`` header naming it. The signing is written out
here rather than borrowed from the SDK, because ``hub/`` imports no vendor SDK; tests check it
against twilio's own ``RequestValidator``.

Error bodies are the classic ``{"code", "message", "more_info", "status"}`` by default; with
``problem_details = True`` they are RFC 9457 problem details (``type``, ``title``, ``status``,
``code``, ``detail``), as newer Twilio endpoints answer and twilio-python raises as
``TwilioServiceException``.

Point twilio-python at it with ``client.api.base_url = fake.base_url``.

What it keeps, for tests to inspect:

- ``requests``: every create request (form fields as a dict of lists, headers, HTTP status);
- ``messages``: the Message resources it created, by sid;
- ``blocked``: the (sender, recipient) pairs that replied STOP (with a Messaging Service the
  sender is the service sid), which make later sends fail with 21610.

Fault injection: ``fail_next(n, status=500)`` or ``fail_next(n, status=429, retry_after=2)``
makes the next ``n`` creates fail before any other check, for 5xx and 429 storms.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from aiohttp import ClientResponse, web
from multidict import MultiDict

from hub.testing.loopback import LoopbackServer

API_VERSION = "2010-04-01"
MORE_INFO = "https://www.twilio.com/docs/errors/{code}"

OPT_OUT_KEYWORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
OPT_IN_KEYWORDS = frozenset({"START", "UNSTOP", "YES"})
HELP_KEYWORDS = frozenset({"HELP", "INFO"})

# Every field twilio-python 9.x sends on Messages create (plus MessageIntent, which 9.13 also
# knows). Unknown fields are recorded but otherwise ignored, as Twilio does.
CREATE_FIELDS = frozenset(
    {
        "To", "From", "MessagingServiceSid", "Body", "MediaUrl", "ContentSid",
        "ContentVariables", "StatusCallback", "ApplicationSid", "ValidityPeriod",
        "ScheduleType", "SendAt", "SendAsMms", "SmartEncoded", "ShortenUrls",
        "ContentRetention", "AddressRetention", "RiskCheck", "ProvideFeedback", "Attempt",
        "ForceDelivery", "PersistentAction", "TrafficType", "FallbackFrom", "MaxPrice",
        "MessageIntent",
    }
)
E164 = re.compile(r"^\+[1-9]\d{1,14}$")
GSM7 = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà^{}\\[~]|€"
)
# Statuses a real message passes through, in order; used to keep ``messages[sid]["status"]``
# at the furthest one reached whatever order the callbacks are sent in.
LIFECYCLE = ("accepted", "scheduled", "queued", "sending", "sent", "delivered", "undelivered",
             "failed", "read", "canceled")


def new_sid(prefix: str) -> str:
    """A Twilio-shaped sid: two letters and 32 hex digits (34 characters)."""
    return prefix + secrets.token_hex(16)


def rfc2822(at: datetime) -> str:
    """Twilio's date format, e.g. ``Thu, 24 Aug 2023 05:01:45 +0000``."""
    return format_datetime(at.astimezone(UTC).replace(microsecond=0))


def num_segments(body: str) -> int:
    """Segments for a body: GSM-7 160/153 characters, otherwise UCS-2 70/67."""
    if not body:
        return 1
    if all(ch in GSM7 for ch in body):
        single, multi = 160, 153
    else:
        single, multi = 70, 67
    return 1 if len(body) <= single else -(-len(body) // multi)


def error_body(code: int, message: str, status: int, *,
               problem: bool = False) -> dict[str, Any]:
    """The classic error body, or (``problem``) RFC 9457 problem details. twilio-python >= 9.10
    raises TwilioServiceException for a body with all of type, title, status and code, and
    TwilioRestException otherwise."""
    if problem:
        return {"type": MORE_INFO.format(code=code), "title": message.split(".")[0],
                "status": status, "code": code, "detail": message,
                "instance": f"/{API_VERSION}/Messages"}
    return {"code": code, "message": message, "more_info": MORE_INFO.format(code=code),
            "status": status}


@dataclass
class Fault:
    """An injected failure the fake answers the next request with, in Twilio's error shape."""
    status: int
    code: int
    message: str
    retry_after: float | None = None


@dataclass
class CreateRequest:
    """One message request the fake received and what it answered, for assertions."""
    account_sid: str
    form: dict[str, list[str]]
    headers: dict[str, str]
    status: int
    response: dict[str, Any]

    @property
    def unknown_fields(self) -> set[str]:
        """Fields twilio-python 9.x would not send (a hand-rolled client's typo, say)."""
        return set(self.form) - CREATE_FIELDS


@dataclass
class FakeTwilio(LoopbackServer):
    """The fake server. ``async with FakeTwilio() as fake:`` starts it on 127.0.0.1, port 0."""

    account_sid: str = field(default_factory=lambda: new_sid("AC"))
    auth_token: str = field(default_factory=lambda: secrets.token_hex(16))
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[CreateRequest] = field(default_factory=list)
    blocked: set[tuple[str, str]] = field(default_factory=set)
    callbacks: list[tuple[str, dict[str, str], int]] = field(default_factory=list)
    _faults: list[Fault] = field(default_factory=list)
    _callback_urls: dict[str, str | None] = field(default_factory=dict)
    #: answer errors as RFC 9457 problem details instead of the classic body
    problem_details: bool = False
    #: (key id, secret) once the account signs webhooks with a shared key (HMAC-SHA256)
    shared_key: tuple[str, str] | None = None
    #: Numbers that are well-formed but not real: creating a message to one fails with 21211.
    #: +15005550001 is Twilio's own "invalid number" test value.
    invalid_numbers: set[str] = field(default_factory=lambda: {"+15005550001"})
    #: (public prefix, local prefix): webhooks for a URL under the public prefix are sent to the
    #: local one but signed over the public URL, as through the hub's reverse proxy.
    proxy: tuple[str, str] | None = None
    base_url: str = ""

    # -- lifecycle -----------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        return [web.post("/2010-04-01/Accounts/{account_sid}/Messages.json", self._create)]

    # -- test controls -------------------------------------------------------------------
    def fail_next(self, n: int = 1, *, status: int = 500, retry_after: float | None = None,
                  code: int | None = None) -> None:
        """Make the next ``n`` create calls fail with ``status`` (429 → code 20429)."""
        if status == 429:
            fault = Fault(429, code or 20429, "Too Many Requests", retry_after)
        else:
            fault = Fault(status, code or 20500, "An internal server error has occurred",
                          retry_after)
        self._faults.extend([fault] * n)

    def use_shared_key(self, key_id: str, secret: str) -> None:
        """Sign every later webhook with this shared key (HMAC-SHA256), as an account that
        turned shared-key signing on."""
        self.shared_key = (key_id, secret)

    def block(self, sender: str, recipient: str) -> None:
        """Record an opt-out as if ``recipient`` had replied STOP to ``sender``."""
        self.blocked.add((sender, recipient))

    def reverse_proxy(self, public_base: str, local_base: str) -> None:
        """Deliver webhooks addressed to ``public_base`` to ``local_base`` (the test server),
        signed over the public URL as Twilio would sign them."""
        self.proxy = (public_base.rstrip("/"), local_base.rstrip("/"))

    def sent_to(self, to: str) -> list[dict[str, Any]]:
        """Messages created for recipient ``to``, oldest first."""
        return [m for m in self.messages.values() if m["to"] == to]

    # -- Messages create -----------------------------------------------------------------
    def _auth_ok(self, request: web.Request, account_sid: str) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return (secrets.compare_digest(user, self.account_sid)
                and secrets.compare_digest(password, self.auth_token)
                and account_sid == self.account_sid)

    async def _create(self, request: web.Request) -> web.Response:
        account_sid = request.match_info["account_sid"]
        post = await request.post()
        form: dict[str, list[str]] = {}
        for key, value in post.items():
            form.setdefault(key, []).append(str(value))
        status, body, headers = self._handle_create(request, account_sid, form)
        if status >= 400 and self.problem_details:
            body = error_body(body["code"], body["message"], status, problem=True)
        self.requests.append(CreateRequest(account_sid, form, dict(request.headers), status, body))
        return web.json_response(body, status=status, headers=headers)

    def _handle_create(self, request: web.Request, account_sid: str,
                       form: dict[str, list[str]]) -> tuple[int, dict[str, Any], dict[str, str]]:
        if self._faults:
            fault = self._faults.pop(0)
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = str(int(fault.retry_after) if float(fault.retry_after)
                                             .is_integer() else fault.retry_after)
            return fault.status, error_body(fault.code, fault.message, fault.status), headers
        if not self._auth_ok(request, account_sid):
            return 401, error_body(20003, "Authenticate", 401), {}

        def one(name: str) -> str | None:
            values = form.get(name)
            return values[0] if values else None

        to = one("To")
        sender = one("From")
        service = one("MessagingServiceSid")
        body = one("Body") or ""
        if not to:
            return 400, error_body(21604, "A 'To' phone number is required.", 400), {}
        if not E164.match(to) or to in self.invalid_numbers:
            return 400, error_body(
                21211, f"The 'To' number {to} is not a valid phone number.", 400), {}
        if not sender and not service:
            return 400, error_body(
                21603, "A 'From' or 'MessagingServiceSid' parameter is required to send a "
                "message", 400), {}
        if not body and not form.get("MediaUrl") and not one("ContentSid"):
            return 400, error_body(
                21619, "A text message body or media urls must be specified.", 400), {}
        if len(body) > 1600:
            return 400, error_body(
                21617, "The concatenated message body exceeds the 1600 character limit.",
                400), {}
        if (service or sender, to) in self.blocked:
            return 400, error_body(
                21610, "Attempt to send to unsubscribed recipient", 400), {}

        now = datetime.now(UTC)
        media = form.get("MediaUrl", [])
        sid = new_sid("MM" if media else "SM")
        uri = f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}.json"
        scheduled = one("ScheduleType") == "fixed" and one("SendAt")
        if service:
            status = "scheduled" if scheduled else "accepted"
        else:
            status = "queued"
        message = {
            "account_sid": account_sid,
            "api_version": API_VERSION,
            "body": body,
            "date_created": rfc2822(now),
            "date_sent": None,
            "date_updated": rfc2822(now),
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            # With a Messaging Service the sender is chosen later (§1.1).
            "from": sender,
            "messaging_service_sid": service,
            "num_media": str(len(media)),
            "num_segments": "0" if service else str(num_segments(body)),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": status,
            "subresource_uris": {"media": f"/{API_VERSION}/Accounts/{account_sid}/Messages/"
                                          f"{sid}/Media.json"},
            "to": to,
            "uri": uri,
        }
        self.messages[sid] = message
        # Kept beside the resource, not in it: Twilio does not echo StatusCallback.
        self._callback_urls[sid] = one("StatusCallback")
        return 201, message, {}

    def status_callback_url(self, sid: str) -> str | None:
        """The StatusCallback given when message ``sid`` was created."""
        return self._callback_urls.get(sid)

    # -- webhooks towards the hub --------------------------------------------------------
    def sign(self, url: str, params: Mapping[str, str] | MultiDict[str]) -> str:
        """``X-Twilio-Signature`` for a form POST to ``url``: with the shared key when one is
        in use, else with the Auth Token."""
        if self.shared_key is not None:
            return twilio_signature(self.shared_key[1], url, params, algorithm="HMAC_SHA256")
        return twilio_signature(self.auth_token, url, params)

    async def post_form(self, url: str, params: Mapping[str, str] | Sequence[tuple[str, str]], *,
                        signature: str | None = None, signed: bool = True,
                        sign_url: str | None = None) -> ClientResponse:
        """POST ``params`` form-encoded to ``url`` as Twilio does.

        ``signed=False`` omits the header; ``signature`` overrides it (a forgery);
        ``sign_url`` signs over another URL than the one called (a proxy, a wrong public URL).
        The response body is read before returning, so callers may use ``await resp.text()``.
        """
        assert self._session is not None, "FakeTwilio not started"
        pairs = list(params.items()) if isinstance(params, Mapping) else list(params)
        signed_url = sign_url or url
        if self.proxy and url.startswith(self.proxy[0]):
            url = self.proxy[1] + url[len(self.proxy[0]):]
        headers = {"User-Agent": "TwilioProxy/1.1",
                   "Content-Type": "application/x-www-form-urlencoded"}
        if signed:
            multi = MultiDict(pairs)
            headers["X-Twilio-Signature"] = signature or self.sign(signed_url, multi)
            if self.shared_key is not None:
                headers["X-Twilio-Webhooks-Signature-Settings"] = (
                    f"key={self.shared_key[0]},algorithm=HMAC_SHA256")
        async with self._session.post(url, data=pairs, headers=headers) as resp:
            await resp.read()
        self.callbacks.append((url, dict(pairs), resp.status))
        return resp

    def status_params(self, sid: str, status: str, *, error_code: int | None = None,
                      error_message: str | None = None) -> dict[str, str]:
        """The parameters of a StatusCallback for message ``sid``."""
        message = self.messages[sid]
        sender = message["from"] or "+15005550006"
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": API_VERSION,
            "From": sender,
            "MessageSid": sid,
            "MessageStatus": status,
            "SmsSid": sid,
            "SmsStatus": status,
            "To": message["to"],
        }
        if message["messaging_service_sid"]:
            params["MessagingServiceSid"] = message["messaging_service_sid"]
        if status in ("failed", "undelivered"):
            params["ErrorCode"] = str(error_code or 30008)
            if error_message:
                params["ErrorMessage"] = error_message
        if status in ("delivered", "undelivered"):
            params["RawDlrDoneDate"] = datetime.now(UTC).strftime("%y%m%d%H%M")
        return params

    async def send_status(self, sid: str, status: str, *, error_code: int | None = None,
                          url: str | None = None, **post_kwargs: Any) -> ClientResponse:
        """POST one StatusCallback for ``sid`` to its StatusCallback URL (or ``url``)."""
        target = url or self.status_callback_url(sid)
        if not target:
            raise ValueError(f"message {sid} was created without a StatusCallback")
        message = self.messages[sid]
        if LIFECYCLE.index(status) > LIFECYCLE.index(message["status"]):
            message["status"] = status
            message["date_updated"] = rfc2822(datetime.now(UTC))
            if status in ("failed", "undelivered"):
                message["error_code"] = error_code or 30008
        return await self.post_form(target, self.status_params(sid, status,
                                                               error_code=error_code),
                                    **post_kwargs)

    async def send_statuses(self, sid: str, statuses: Iterable[str],
                            **kwargs: Any) -> list[ClientResponse]:
        """Send several callbacks for ``sid`` in exactly the given order (any order)."""
        return [await self.send_status(sid, status, **kwargs) for status in statuses]

    def inbound_params(self, from_: str, to: str, body: str, *,
                       messaging_service_sid: str | None = None,
                       media: Sequence[tuple[str, str]] = (),
                       advanced_opt_out: bool = False) -> list[tuple[str, str]]:
        """The parameters of an inbound message webhook."""
        sid = new_sid("MM" if media else "SM")
        params: list[tuple[str, str]] = [
            ("ToCountry", "US"), ("ToState", ""), ("SmsMessageSid", sid),
            ("NumMedia", str(len(media))), ("ToCity", ""), ("FromZip", ""),
            ("SmsSid", sid), ("FromState", ""), ("SmsStatus", "received"), ("FromCity", ""),
            ("Body", body), ("FromCountry", "US"), ("To", to), ("ToZip", ""),
            ("NumSegments", str(num_segments(body))), ("MessageSid", sid),
            ("AccountSid", self.account_sid), ("From", from_), ("ApiVersion", API_VERSION),
        ]
        if messaging_service_sid:
            params.append(("MessagingServiceSid", messaging_service_sid))
        for n, (content_type, url) in enumerate(media):
            params += [(f"MediaContentType{n}", content_type), (f"MediaUrl{n}", url)]
        keyword = body.strip().upper()
        if advanced_opt_out and messaging_service_sid:
            for kind, words in (("STOP", OPT_OUT_KEYWORDS), ("START", OPT_IN_KEYWORDS),
                                ("HELP", HELP_KEYWORDS)):
                if keyword in words:
                    params.append(("OptOutType", kind))
        return params

    async def send_inbound(self, url: str, from_: str, to: str, body: str, *,
                           messaging_service_sid: str | None = None,
                           media: Sequence[tuple[str, str]] = (),
                           advanced_opt_out: bool = False,
                           **post_kwargs: Any) -> ClientResponse:
        """A text from ``from_`` to the hub's number ``to``, forwarded to ``url``.

        Like Twilio, a whole-body opt-out keyword blocks the pair (the Messaging Service
        and the recipient when one is named) and an opt-in keyword unblocks it; the message is
        forwarded to the webhook either way.
        """
        keyword = body.strip().upper()
        pair = (messaging_service_sid or to, from_)
        if keyword in OPT_OUT_KEYWORDS:
            self.blocked.add(pair)
        elif keyword in OPT_IN_KEYWORDS:
            self.blocked.discard(pair)
        params = self.inbound_params(from_, to, body, messaging_service_sid=messaging_service_sid,
                                     media=media, advanced_opt_out=advanced_opt_out)
        return await self.post_form(url, params, **post_kwargs)


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str] | MultiDict[str], *,
                     algorithm: str = "HMAC_SHA1") -> str:
    """HMAC over the URL plus each sorted name and its sorted values, base64: SHA-1 keyed with
    the Auth Token, or SHA-256 keyed with a shared key (``algorithm="HMAC_SHA256"``)."""
    data = url
    for name in sorted(set(params)):
        values = params.getall(name) if isinstance(params, MultiDict) else [params[name]]
        for value in sorted(set(values)):
            data += name + value
    hash_function = {"HMAC_SHA1": hashlib.sha1, "HMAC_SHA256": hashlib.sha256}[algorithm]
    digest = hmac.new(auth_token.encode(), data.encode(), hash_function).digest()
    return base64.b64encode(digest).decode()
