"""SMS channel over Twilio Programmable Messaging (docs/providers/twilio.md), config section
``[sms]``.

Sending uses twilio-python's async client (``messages.create_async``) over the hub's shared
aiohttp session. Every message carries a StatusCallback URL built from the hub's public URL, so
Twilio reports back to ``/webhooks/twilio/status``; replies arrive at
``/webhooks/twilio/inbound``. Both webhooks check the signature over the *configured* public URL
(never the Host header a proxy passes on) and answer 403 to anything unsigned or forged: the
classic ``X-Twilio-Signature`` (HMAC-SHA1 keyed with the Auth Token) or, when the request
announces it with ``X-Twilio-Webhooks-Signature-Settings``, a shared-key signature (HMAC-SHA256
keyed with ``[sms] webhook_key``). A request signed a way the hub is not configured for is
refused with an error in the log that says what to configure.

Senders: ``from_number`` (or ``messaging_service_sid``) is the shared sender; ``[sms.senders]``
gives a practice its own number or Messaging Service. A reply is attributed to a practice only
when that is unambiguous: a reply to a practice's own sender belongs to it; a reply to the
shared sender belongs to the one practice (among those without their own sender) that texted
or knows that number, else it stays unassigned, for an operator to see.

Statuses are mapped to hub statuses and handed to ``record_status``, which moves a
communication forward only: Twilio's callbacks arrive out of order.

Inbound replies: a ``MessageSid`` already recorded is a replay and changes nothing (an old
START replayed after a newer STOP must not opt the number back in). Keywords are matched on the
whole body, trimmed, case-insensitive; opt-out keywords also after trailing punctuation is
removed ("Stop." opts out; Twilio itself may not block on it, the hub does). STOP and its
synonyms opt the number out, START/UNSTOP/YES (exactly) opt it back in, HELP/INFO are only
logged (Twilio answers them itself). Twilio blocks the pair on its side too; a later send gets
error 21610: the send job records the opt-out and fails the message permanently.

Send errors, from the classic exception and the RFC 9457 problem-details one alike: 21610 →
``opted_out`` (permanent); 21211 and the other "this number cannot take SMS" codes →
``invalid_address`` (permanent); 429 and 5xx → ``transient`` with Twilio's Retry-After when it
gives one; 20003 (bad credentials) → ``transient`` with a long delay, since the operator fixing
the token should not cost the queued messages; other 4xx → ``rejected``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import string
from collections.abc import Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.request_validator import (
    HMAC_SHA1,
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
    get_signature_algorithm,
)
from twilio.rest import Client

from hub.hookspecs import hookimpl
from hub.messaging import service
from hub.messaging.channel import ChannelError, OutboundMessage, SendResult

if TYPE_CHECKING:
    from hub.core import Hub

log = logging.getLogger(__name__)

STATUS_PATH = "/webhooks/twilio/status"
INBOUND_PATH = "/webhooks/twilio/inbound"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'

OPT_OUT_KEYWORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
OPT_IN_KEYWORDS = frozenset({"START", "UNSTOP", "YES"})
HELP_KEYWORDS = frozenset({"HELP", "INFO"})

#: Trailing characters ignored when matching an opt-out keyword ("Stop.", "stop!").
TRAILING = string.punctuation + string.whitespace

#: Twilio message status → hub status. ``receiving``/``received`` are
#: inbound-only and never reach the status webhook. ``partially_delivered`` (group/RCS) did not
#: fully arrive, so it counts as ``sent`` (the carrier took it) rather than ``delivered``.
STATUS_MAP: Mapping[str, str] = {
    "accepted": "queued",
    "scheduled": "queued",
    "queued": "queued",
    "sending": "sending",
    "sent": "sent",
    "partially_delivered": "sent",
    "delivered": "delivered",
    "undelivered": "undelivered",
    "failed": "failed",
    "read": "read",
    "canceled": "canceled",
}

#: Synchronous errors meaning "this number cannot receive SMS" (§1.7).
INVALID_NUMBER_CODES = frozenset({21211, 21604, 21612, 21614, 21635})
#: ``ErrorCode`` on an undelivered callback that says the same after the fact.
INVALID_NUMBER_DLR_CODES = frozenset({30005, 30006})
OPTED_OUT_CODE = 21610
AUTH_FAILED_CODE = 20003
AUTH_RETRY_SECONDS = 600.0
E164 = re.compile(r"^\+[1-9]\d{1,14}$")
SERVICE_SID = re.compile(r"^MG[0-9a-fA-F]{32}$")

# Response headers of the last Twilio call made in this task. twilio-python's exceptions do not
# carry headers, and Retry-After lives there. A ContextVar is per task, so concurrent sends do
# not read each other's headers (the SDK awaits the HTTP client in the caller's task).
_last_headers: ContextVar[Mapping[str, str] | None] = ContextVar("twilio_headers", default=None)


class SmsConfig(BaseModel):
    """``[sms]``: Twilio credentials and sender. The channel is off until both credentials
    are set (empty strings count as unset, so ``${TWILIO_AUTH_TOKEN:-}`` works)."""

    model_config = ConfigDict(extra="forbid")

    account_sid: str | None = Field(None, description="Twilio Account SID (AC...)")
    auth_token: SecretStr | None = Field(None, description="Twilio Auth Token; also signs webhooks")
    from_number: str | None = Field(None, description="sender number, E.164 (+15005550006)")
    messaging_service_sid: str | None = Field(
        None, description="Messaging Service (MG...); used instead of from_number when set")
    base_url: str | None = Field(
        None, description="Twilio API base URL override (tests: the fake server)")
    public_url: str | None = Field(
        None, description="public base URL Twilio calls back; defaults to [hub] public_url")
    timeout: float = Field(30.0, gt=0, description="seconds per API call")
    webhook_key: SecretStr | None = Field(
        None, description="shared-key webhook signing secret (HMAC-SHA256), when the Twilio "
        "account signs webhooks with a shared key instead of the Auth Token")
    webhook_key_id: str | None = Field(
        None, description="the shared key's id; when set, webhooks naming another key are refused")
    senders: dict[str, str] = Field(
        default_factory=dict, description="practice slug -> its own sender: an E.164 number or a "
        "Messaging Service sid (MG...); practices not listed use the shared sender")

    @field_validator("account_sid", "from_number", "messaging_service_sid", "base_url",
                     "public_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("auth_token", "webhook_key", "webhook_key_id", mode="before")
    @classmethod
    def _empty_token(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("senders")
    @classmethod
    def _senders(cls, value: dict[str, str]) -> dict[str, str]:
        for slug, sender in value.items():
            if not (E164.match(sender) or SERVICE_SID.match(sender)):
                raise ValueError(f"senders.{slug}: {sender!r} is neither an E.164 number nor a "
                                 "Messaging Service sid (MG + 32 hex digits)")
        taken = [s for s in value.values() if list(value.values()).count(s) > 1]
        if taken:
            raise ValueError(f"senders: {sorted(set(taken))} given to several practices; a "
                             "shared sender is from_number/messaging_service_sid")
        return value

    @model_validator(mode="after")
    def _check(self) -> SmsConfig:
        if self.account_sid and not self.account_sid.startswith("AC"):
            raise ValueError("account_sid must start with 'AC'")
        if self.from_number and not E164.match(self.from_number):
            raise ValueError(f"from_number must be E.164 such as +15005550006, got "
                             f"{self.from_number!r}")
        if self.messaging_service_sid and not self.messaging_service_sid.startswith("MG"):
            raise ValueError("messaging_service_sid must start with 'MG'")
        if self.configured and not (self.from_number or self.messaging_service_sid):
            raise ValueError("set from_number or messaging_service_sid to send SMS")
        shared = {self.from_number, self.messaging_service_sid} - {None}
        if shared & set(self.senders.values()):
            raise ValueError("senders: a practice's own sender cannot also be the shared "
                             "from_number or messaging_service_sid")
        return self

    @property
    def configured(self) -> bool:
        return bool(self.account_sid and self.auth_token and self.auth_token.get_secret_value())


class _HubHttpClient(AsyncTwilioHttpClient):
    """twilio's aiohttp client, on the hub's shared session, remembering response headers."""

    def __init__(self, hub: Hub) -> None:
        super().__init__(pool_connections=False)
        self._hub = hub

    async def request(self, method: str, url: str, params: Any = None, data: Any = None,
                      headers: dict[str, str] | None = None, auth: tuple[str, str] | None = None,
                      timeout: float | None = None,  # noqa: ASYNC109 (twilio's signature)
                      allow_redirects: bool = False) -> Response:
        self.session = self._hub.http  # shared; created and closed by the hub
        headers = dict(headers or {})
        if auth is not None:  # aiohttp deprecates BasicAuth objects; send the header itself
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        response = await super().request(method, url, params=params, data=data, headers=headers,
                                         auth=None, timeout=timeout,
                                         allow_redirects=allow_redirects)
        _last_headers.set(response.headers)
        return response

    async def close(self) -> None:  # the session is the hub's to close
        self.session = None


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    value = (headers or {}).get("Retry-After")
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None


class SmsChannel:
    """The ``sms`` channel (see the module docstring)."""

    name = "sms"
    #: how its webhooks are signed, for the API description (hub/web/openapi.py)
    security_schemes = {
        "twilioSignature": {"type": "apiKey", "in": "header", "name": "X-Twilio-Signature",
                            "description": "Twilio's request signature (HMAC-SHA1 of the URL and "
                                           "form parameters) on the SMS status and inbound webhooks; "
                                           "or the shared-key signature announced by "
                                           "X-Twilio-Webhooks-Signature-Settings."},
    }

    def __init__(self, hub: Hub, config: SmsConfig) -> None:
        self.hub = hub
        self.config = config
        assert config.account_sid and config.auth_token
        self._token = config.auth_token.get_secret_value()
        self._validator = RequestValidator(self._token)
        self._shared_validator = (RequestValidator(config.webhook_key.get_secret_value())
                                  if config.webhook_key else None)
        self._http = _HubHttpClient(hub)
        self._client = Client(config.account_sid, self._token, http_client=self._http,
                              environment={})
        if config.base_url:
            self._client.api.base_url = config.base_url.rstrip("/")
        self._last_error: str | None = None

    # -- URLs ----------------------------------------------------------------------------
    @property
    def public_url(self) -> str:
        return (self.config.public_url or self.hub.config.hub.public_url).rstrip("/")

    @property
    def status_callback_url(self) -> str:
        return self.public_url + STATUS_PATH

    @property
    def inbound_url(self) -> str:
        return self.public_url + INBOUND_PATH

    # -- senders -------------------------------------------------------------------------
    @property
    def shared_sender(self) -> str:
        sender = self.config.messaging_service_sid or self.config.from_number
        assert sender
        return sender

    async def _own_senders(self) -> dict[int, str]:
        """practice id -> its own sender, for the configured practices the hub knows."""
        if not self.config.senders:
            return {}
        async with self.hub.sessionmaker() as session:
            ids = await service.practice_ids_by_slug(session, list(self.config.senders))
        return {pid: self.config.senders[slug] for slug, pid in ids.items()}

    async def _sender_for(self, practice_id: int | None) -> str:
        if practice_id is not None and self.config.senders:
            own = await self._own_senders()
            if practice_id in own:
                return own[practice_id]
        return self.shared_sender

    async def _reply_scope(self, form: Any) -> tuple[set[int] | None, set[int]]:
        """(only, exclude): the practices a reply to this sender can belong to."""
        own = await self._own_senders()
        reached = {str(form.get("MessagingServiceSid") or ""), str(form.get("To") or "")}
        mine = {pid for pid, sender in own.items() if sender in reached}
        if mine:
            return mine, set()
        return None, set(own)

    # -- sending -------------------------------------------------------------------------
    async def send(self, message: OutboundMessage) -> SendResult:
        if not message.text:
            raise ChannelError("SMS has no body", reason="rejected", permanent=True)
        if not E164.match(message.to or ""):
            raise ChannelError(f"not an E.164 number: {message.to!r}", reason="invalid_address",
                               permanent=True)
        # ?c= lets a callback that outruns the send job still find its communication; the
        # query string is covered by X-Twilio-Signature.
        kwargs: dict[str, Any] = {"to": message.to, "body": message.text,
                                  "status_callback": f"{self.status_callback_url}?c={message.communication_id}"}
        sender = await self._sender_for(message.practice_id)
        if sender.startswith("MG"):
            kwargs["messaging_service_sid"] = sender
        else:
            kwargs["from_"] = sender
        try:
            async with asyncio.timeout(self.config.timeout):
                created = await self._client.messages.create_async(**kwargs)
        except TwilioRestException as err:
            raise self._error(err.status, err.code, err.msg) from err
        except TwilioServiceException as err:  # RFC 9457 problem details: the same codes
            raise self._error(err.status, err.code, err.detail or err.title) from err
        except (aiohttp.ClientError, TimeoutError) as err:
            self._last_error = f"network: {err!r}"
            raise ChannelError(f"Twilio unreachable: {err!r}", reason="transient",
                               permanent=False) from err
        except TwilioException as err:  # no HTTP answer to read: try again later
            raise ChannelError(f"Twilio error: {err!r}", reason="transient",
                               permanent=False) from err
        self._last_error = None
        return SendResult(
            provider_id=created.sid,
            status=STATUS_MAP.get(str(created.status), "queued"),
            detail={"twilio_status": str(created.status), "num_segments": created.num_segments},
        )

    def _error(self, status: int, code: Any, message: str | None) -> ChannelError:
        code = _int(code)
        text = f"Twilio {status} {code}: {message}"
        if code == OPTED_OUT_CODE:
            # Twilio holds a STOP the hub may not have seen. The send job records the opt-out
            # for a permanent ``opted_out`` failure (hub.messaging.sending), so the verdict
            # stops trying; the channel itself writes nothing during a send.
            return ChannelError(text, reason="opted_out", permanent=True, code=code)
        if code in INVALID_NUMBER_CODES:
            return ChannelError(text, reason="invalid_address", permanent=True, code=code)
        retry_after = _retry_after(_last_headers.get())
        if status == 429 or status >= 500:
            self._last_error = text
            return ChannelError(text, reason="transient", permanent=False, code=code,
                                retry_after=retry_after)
        if code == AUTH_FAILED_CODE or status in (401, 403):
            self._last_error = text
            log.error("sms: Twilio refused the credentials in [sms]; messages wait and retry")
            return ChannelError(text, reason="transient", permanent=False, code=code,
                                retry_after=retry_after or AUTH_RETRY_SECONDS)
        return ChannelError(text, reason="rejected", permanent=True, code=code)

    # -- webhooks ------------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        return [web.post(STATUS_PATH, self.status_webhook),
                web.post(INBOUND_PATH, self.inbound_webhook)]

    def _signed_url(self, request: web.Request, path: str) -> str:
        """The URL Twilio signed: our public base + the route + the query string as received.
        A reverse proxy may strip a path prefix or rewrite Host, so neither is trusted."""
        query = request.rel_url.raw_query_string
        return self.public_url + path + (f"?{query}" if query else "")

    async def _verified_form(self, request: web.Request, path: str) -> Any | None:
        form = await request.post()
        signature = request.headers.get("X-Twilio-Signature", "")
        settings = request.headers.get(SIGNATURE_SETTINGS_HEADER, "")
        validator, algorithm, problem = self._validator, HMAC_SHA1, None
        if settings:
            algorithm = get_signature_algorithm(settings)
            key_id = _setting(settings, "key")
            if self._shared_validator is None:
                problem = (f"signed with shared key {key_id!r} ({algorithm}), but [sms] "
                           "webhook_key is not set: configure the key's secret there")
            elif self.config.webhook_key_id and key_id != self.config.webhook_key_id:
                problem = (f"signed with shared key {key_id!r}, not the configured "
                           f"[sms] webhook_key_id {self.config.webhook_key_id!r}")
            validator = self._shared_validator or validator
        if problem is None and not signature:
            problem = "no X-Twilio-Signature"
        if problem is None and not validator.validate(
                self._signed_url(request, path), form, signature, algorithm=algorithm):
            problem = f"bad X-Twilio-Signature ({algorithm})"
        if problem is not None:
            level = logging.ERROR if settings and self._shared_validator is None else logging.WARNING
            log.log(level, "sms: refused %s webhook from %s: %s", path, request.remote, problem)
            return None
        return form

    async def status_webhook(self, request: web.Request) -> web.StreamResponse:
        form = await self._verified_form(request, STATUS_PATH)
        if form is None:
            return web.Response(status=403, text="invalid signature")
        sid = form.get("MessageSid") or form.get("SmsSid")
        provider_status = form.get("MessageStatus") or form.get("SmsStatus") or ""
        status = STATUS_MAP.get(provider_status)
        if not sid or status is None:
            log.info("sms: ignored status callback %r for %r", provider_status, sid)
            return web.Response(status=200)
        detail = {k: form[k] for k in ("ErrorCode", "ErrorMessage", "RawDlrDoneDate", "To",
                                       "From", "MessagingServiceSid") if form.get(k)}
        error_code = _int(form.get("ErrorCode"))
        async with self.hub.transaction() as session:
            await service.record_status(
                session, self.hub, channel=self.name, provider_id=str(sid), status=status,
                provider_status=provider_status, at=self.hub.clock.now(), detail=detail,
                communication_id=_int(request.query.get("c")))
            to = form.get("To")
            if status in ("undelivered", "failed") and to:
                if error_code in INVALID_NUMBER_DLR_CODES:
                    await service.mark_address_invalid(
                        session, self.hub, kind="sms", address=str(to),
                        reason=f"Twilio error {error_code}", source="bounce")
                elif error_code == OPTED_OUT_CODE:
                    await service.set_address_opt_out(
                        session, self.hub, kind="sms", address=str(to), opted_out=True,
                        source="sms_keyword", detail="Twilio error 21610")
        return web.Response(status=200)

    async def inbound_webhook(self, request: web.Request) -> web.StreamResponse:
        form = await self._verified_form(request, INBOUND_PATH)
        if form is None:
            return web.Response(status=403, text="invalid signature")
        sender = str(form.get("From") or "")
        body = str(form.get("Body") or "")
        kind, keyword = keyword_kind(body, str(form.get("OptOutType") or ""))
        sid = form.get("MessageSid") or form.get("SmsMessageSid")
        only, exclude = await self._reply_scope(form)
        async with self.hub.transaction() as session:
            if await service.inbound_seen(session, sid):
                # A replay (Twilio retries, or someone re-posting an old signed request):
                # keywords and replies were handled the first time.
                log.info("sms: inbound %s already recorded; replay ignored", sid)
                return twiml_response()
            if kind in ("STOP", "START") and sender:
                await service.set_address_opt_out(
                    session, self.hub, kind="sms", address=sender, opted_out=kind == "STOP",
                    source="sms_keyword", detail=keyword, only=only, exclude=exclude)
            elif kind == "HELP":
                log.info("sms: HELP from %s (Twilio answers HELP itself)", sender)
            await service.record_inbound(
                session, self.hub, channel=self.name, from_address=sender,
                to_address=str(form.get("To") or ""), body=body, provider_id=sid,
                raw=_form_dict(form), only=only, exclude=exclude)
        return twiml_response()

    # -- lifecycle -----------------------------------------------------------------------
    async def health(self) -> tuple[bool, str]:
        sender = self.shared_sender
        if self.config.senders:
            sender += f" (+{len(self.config.senders)} practices with their own sender)"
        if self._last_error:
            return False, f"twilio: last send failed: {self._last_error}"
        return True, f"twilio: sending as {sender}, callbacks to {self.status_callback_url}"

    async def close(self) -> None:
        await self._http.close()


def keyword_kind(body: str, opt_out_type: str = "") -> tuple[str, str]:
    """("STOP" | "START" | "HELP" | "", the keyword as matched) for an inbound body.

    With Advanced Opt-Out a Messaging Service may have custom keywords; Twilio then says which
    kind it matched in ``OptOutType``, which is trusted over the hub's own lists. Opt-out
    keywords are matched after trailing punctuation is removed; opt-in keywords only exactly
    (a stray "Start!" must not undo a STOP that Twilio still enforces)."""
    keyword = body.strip().upper()
    if opt_out_type.strip():
        return opt_out_type.strip().upper(), keyword
    bare = keyword.rstrip(TRAILING)
    if bare in OPT_OUT_KEYWORDS:
        return "STOP", bare
    if keyword in OPT_IN_KEYWORDS:
        return "START", keyword
    if bare in HELP_KEYWORDS:
        return "HELP", bare
    return "", keyword


def twiml_response() -> web.Response:
    """The empty TwiML answer: Twilio sends no reply to the texter."""
    return web.Response(text=EMPTY_TWIML, content_type="text/xml")


def _setting(header: str, name: str) -> str | None:
    for part in header.split(","):
        key, sep, value = part.partition("=")
        if sep and key.strip() == name:
            return value.strip()
    return None


def _form_dict(form: Any) -> dict[str, Any]:
    """Form parameters as a JSON-able dict; a repeated key keeps all its values as a list."""
    out: dict[str, Any] = {}
    for key in form:
        values = [str(v) for v in form.getall(key)]
        out[key] = values[0] if len(values) == 1 else values
    return out


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# -- hooks ---------------------------------------------------------------------------------
@hookimpl
def vethub_config_sections() -> dict[str, type[BaseModel]]:
    return {"sms": SmsConfig}


@hookimpl
def vethub_channels(hub: Hub) -> list[SmsChannel]:
    config: SmsConfig | None = hub.config.section("sms")
    if config is None:
        log.info("sms channel off: no [sms] section")
        return []
    if not config.configured:
        log.info("sms channel off: no credentials ([sms] account_sid and auth_token unset)")
        return []
    channel = SmsChannel(hub, config)
    if channel.public_url.startswith(("http://127.", "http://localhost")):
        log.warning("sms: Twilio cannot reach %s; set [hub] public_url (or [sms] public_url) "
                    "to the hub's public https URL for status callbacks and replies",
                    channel.public_url)
    return [channel]
