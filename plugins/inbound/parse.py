"""Reading an inbound message: delivery status notifications (RFC 3464, plus the non-standard
formats flufl.bounce knows), feedback reports (RFC 5965), and the Message-IDs it refers to.

Pure functions over :class:`email.message.Message`; nothing here touches the database.
"""

from __future__ import annotations

import email
import email.header
import email.parser
import email.policy
import logging
import re
from dataclasses import dataclass, field
from email.message import Message
from email.utils import getaddresses, parseaddr

from flufl.bounce import all_failures

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Failure:
    """One recipient a bounce reports as failed, and whether the failure is permanent."""
    address: str
    permanent: bool
    status: str = ""
    diagnostic: str = ""


@dataclass(frozen=True)
class Bounce:
    """A delivery failure report and the recipients it says failed."""
    failures: list[Failure]
    #: Message-ID of the message that bounced, when the report quotes it
    original_message_id: str | None
    #: "dsn" (RFC 3464) or "flufl.bounce" (a non-standard format it recognised)
    source: str
    reporting_mta: str = ""


@dataclass(frozen=True)
class Complaint:
    """An abuse (spam) complaint in ARF format about a message the hub sent."""
    feedback_type: str
    reporter: str
    original_message_id: str | None
    original_recipient: str | None


@dataclass
class Parsed:
    """A parsed inbound email: the headers processing needs and the Message-IDs it refers to."""
    message: Message
    from_address: str
    subject: str
    message_ids: list[str] = field(default_factory=list)  # In-Reply-To, then References


def parse(raw: bytes) -> Parsed:
    # compat32: flufl.bounce's detectors expect its Message API
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    from_address = parseaddr(str(msg.get("From", "")))[1].strip().lower()
    refs = " ".join(str(msg.get(h, "")) for h in ("In-Reply-To", "References"))
    return Parsed(msg, from_address, _text(msg.get("Subject", "")), _msgids(refs))


def _text(value: object) -> str:
    """A header as text (RFC 2047 decoded), one line."""
    decoded = str(email.header.make_header(email.header.decode_header(str(value))))
    return " ".join(decoded.split())


def _msgids(value: str) -> list[str]:
    return re.findall(r"<[^<>\s]+>", value or "")


def _header_blocks(part: Message) -> list[Message]:
    """The header blocks of a message/delivery-status or message/feedback-report part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    parser = email.parser.HeaderParser(policy=email.policy.compat32)
    text = payload if isinstance(payload, str) else ""
    return [parser.parsestr(block) for block in re.split(r"\r?\n\s*\r?\n", text) if block.strip()]


def _original_message_id(report: Message) -> str | None:
    """The Message-ID of the message a report quotes (message/rfc822 or text/rfc822-headers)."""
    for part in report.walk():
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "message/global"):
            inner = part.get_payload()
            inner = inner[0] if isinstance(inner, list) and inner else inner
            if isinstance(inner, Message) and inner.get("Message-ID"):
                return _msgids(str(inner["Message-ID"]))[0] if _msgids(str(inner["Message-ID"])) else None
        if ctype in ("text/rfc822-headers", "message/rfc822-headers"):
            data = part.get_payload(decode=True)
            text = data.decode("utf-8", "replace") if isinstance(data, bytes) else ""
            headers = email.parser.HeaderParser(policy=email.policy.compat32).parsestr(text)
            ids = _msgids(str(headers.get("Message-ID", "")))
            if ids:
                return ids[0]
    return None


def _report_of(msg: Message, report_type: str) -> bool:
    return (msg.get_content_type() == "multipart/report"
            and str(msg.get_param("report-type", "")).lower() == report_type)


def _recipient(field_value: str) -> str:
    """``rfc822; someone@example.org`` -> ``someone@example.org``."""
    _, _, addr = field_value.partition(";")
    return parseaddr((addr or field_value).strip())[1].strip().lower()


def read_dsn(msg: Message) -> Bounce | None:
    """An RFC 3464 report: every recipient whose Action is failed (5.x.x: permanent) or
    delayed (4.x.x: temporary)."""
    if not _report_of(msg, "delivery-status"):
        return None
    failures: list[Failure] = []
    mta = ""
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        blocks = _header_blocks(part)
        if blocks:
            mta = _recipient(str(blocks[0].get("Reporting-MTA", ""))) or str(blocks[0].get("Reporting-MTA", ""))
        for block in blocks[1:] if len(blocks) > 1 else blocks:
            action = str(block.get("Action", "")).strip().lower()
            status = str(block.get("Status", "")).strip().split(" ")[0]
            address = _recipient(str(block.get("Final-Recipient") or block.get("Original-Recipient") or ""))
            if not address or action not in ("failed", "delayed"):
                continue
            failures.append(Failure(address, action == "failed" and status.startswith("5"), status,
                                    _text(block.get("Diagnostic-Code", ""))[:500]))
    return Bounce(failures, _original_message_id(msg), "dsn", mta)


def read_bounce(msg: Message) -> Bounce | None:
    """A DSN, else a bounce in one of the formats flufl.bounce recognises, else None."""
    dsn = read_dsn(msg)
    if dsn is not None and dsn.failures:
        return dsn
    try:
        temporary, permanent = all_failures(msg)  # flufl.bounce's order: temporary first
    except Exception:  # noqa: BLE001 - a detector choking on a malformed message (it re-raises)
        log.warning("flufl.bounce could not read a message", exc_info=True)
        return dsn
    failures = [Failure(a.decode("utf-8", "replace").lower(), True) for a in sorted(permanent)]
    failures += [Failure(a.decode("utf-8", "replace").lower(), False)
                 for a in sorted(temporary - permanent)]
    if not failures:
        return dsn
    return Bounce(failures, _original_message_id(msg), "flufl.bounce")


def read_complaint(msg: Message) -> Complaint | None:
    """An RFC 5965 feedback report (``abuse``, ``fraud``...; ``not-spam`` is no complaint)."""
    if not _report_of(msg, "feedback-report"):
        return None
    for part in msg.walk():
        if part.get_content_type() != "message/feedback-report":
            continue
        blocks = _header_blocks(part)
        fields = blocks[0] if blocks else Message()
        kind = str(fields.get("Feedback-Type", "")).strip().lower()
        if not kind or kind == "not-spam":
            return None
        rcpt = str(fields.get("Original-Rcpt-To", "")).strip()
        reporter = (str(fields.get("Reporting-MTA", "")).partition(";")[2].strip()
                    or str(fields.get("User-Agent", "")).strip() or "unknown provider")
        return Complaint(kind, reporter[:200], _original_message_id(msg),
                         parseaddr(rcpt)[1].lower() or None)
    return None


def recipients(values: list[str]) -> list[str]:
    return [addr.lower() for _, addr in getaddresses(values) if addr]


def plain_body(msg: Message, limit: int = 20_000) -> str:
    """The first text/plain part, decoded (replies and written requests)."""
    for part in msg.walk():
        if part.get_content_type() == "text/plain" and not part.get_filename():
            payload = part.get_payload(decode=True)
            data = payload if isinstance(payload, bytes) else b""
            charset = part.get_content_charset() or "utf-8"
            try:
                return data.decode(charset, "replace")[:limit]
            except LookupError:
                return data.decode("utf-8", "replace")[:limit]
    return ""
