"""The DICOM upper layer's PDUs and DIMSE command sets (PS3.8, PS3.7), as bytes.

What a Storage/Verification SCP needs, and nothing else: parse an A-ASSOCIATE-RQ (strictly:
whatever PS3.8 §9.3.2 says a requestor shall send is checked), build the AC/RJ/abort/release
PDUs, parse a command set and build a response, split a response into P-DATA-TF PDUs.
:mod:`plugins.dicom.association` does the I/O.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from typing import Any

# A-ABORT reasons when the service provider aborts (PS3.8 §9.3.8, table 9-26)
ABORT_NOT_SPECIFIED = 0
ABORT_UNRECOGNIZED_PDU = 1
ABORT_UNEXPECTED_PDU = 2
ABORT_UNRECOGNIZED_PARAMETER = 4
ABORT_UNEXPECTED_PARAMETER = 5
ABORT_INVALID_PARAMETER = 6

# A-ASSOCIATE-RJ (result, source, reason), PS3.8 §9.3.4
RJ_NO_REASON = (0x01, 0x01, 0x01)  # permanent, service user, no reason given
RJ_APPLICATION_CONTEXT = (0x01, 0x01, 0x02)  # permanent, service user, context not supported
RJ_PROTOCOL_VERSION = (0x01, 0x02, 0x02)  # permanent, service provider (ACSE), version
RJ_LOCAL_LIMIT = (0x02, 0x03, 0x02)  # transient, service provider (presentation), local limit

PDU_TYPES = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07}


class ProtocolError(Exception):
    """The peer broke the protocol; the association is aborted with ``reason``."""

    def __init__(self, message: str, reason: int = ABORT_NOT_SPECIFIED) -> None:
        super().__init__(message)
        self.reason = reason


class AssociateRefused(Exception):
    """A well-formed A-ASSOCIATE-RQ this hub cannot accept: answered with an A-ASSOCIATE-RJ."""

    def __init__(self, message: str, rsd: tuple[int, int, int]) -> None:
        super().__init__(message)
        self.rsd = rsd


APPLICATION_CONTEXT = b"1.2.840.10008.3.1.1.1"
IMPLEMENTATION_UID = b"1.2.826.0.1.3680043.10.1207.1"
IMPLEMENTATION_VERSION = b"VETHUB_UL_1"
VERIFICATION = "1.2.840.10008.1.1"

# PS3.8 9.3.3.2 presentation context results
PC_ACCEPT, PC_ABSTRACT_NOT_SUPPORTED, PC_TS_NOT_SUPPORTED = 0, 3, 4


def decode_uid(raw: bytes) -> str:
    return raw.rstrip(b"\x00 ").decode("ascii", "replace")


def _items(data: bytes, what: str) -> Iterable[tuple[int, bytes]]:
    """(type, value) of the variable items of an A-ASSOCIATE PDU (or of a sub-item list).

    An item whose length runs past the end of ``data`` (or a stray byte or three after the
    last item) is a malformed PDU, not something to read around."""
    pos, end = 0, len(data)
    while pos < end:
        if pos + 4 > end:
            raise ProtocolError(f"{what}: truncated item header", ABORT_INVALID_PARAMETER)
        kind, length = data[pos], struct.unpack_from(">H", data, pos + 2)[0]
        if pos + 4 + length > end:
            raise ProtocolError(
                f"{what}: item {kind:#04x} of {length} bytes overruns its PDU",
                ABORT_INVALID_PARAMETER,
            )
        yield kind, data[pos + 4 : pos + 4 + length]
        pos += 4 + length


@dataclass
class AssociateRQ:
    """The parts of an A-ASSOCIATE-RQ the receiver decides on: AE titles, presentation contexts."""
    called_ae: str
    calling_ae: str
    contexts: list[tuple[int, str, list[str]]]  # (id, abstract syntax, transfer syntaxes)
    max_length: int = 0


def _ae_title(raw: bytes, what: str) -> str:
    title = raw.decode("ascii", "replace").strip()
    if not title:
        raise AssociateRefused(f"{what} AE title is empty", RJ_NO_REASON)
    return title


def parse_associate_rq(body: bytes) -> AssociateRQ:
    """The A-ASSOCIATE-RQ in ``body`` (the PDU without its 6-byte header), checked.

    :raises ProtocolError: malformed (the association is aborted).
    :raises AssociateRefused: well-formed but unacceptable: protocol version without bit 0,
        an application context other than DICOM's (answered with the matching A-ASSOCIATE-RJ).
    """
    if len(body) < 68:
        raise ProtocolError("A-ASSOCIATE-RQ shorter than its fixed fields", ABORT_INVALID_PARAMETER)
    version = struct.unpack_from(">H", body, 0)[0]
    called = _ae_title(body[4:20], "called")
    calling = _ae_title(body[20:36], "calling")
    items = _variable_items(body[68:])
    # Checked after the items, so a malformed PDU is aborted rather than politely refused.
    if not version & 0x0001:
        raise AssociateRefused(f"protocol version {version:#06x} not supported",
                               RJ_PROTOCOL_VERSION)
    if items.app_context.rstrip(b"\x00 ") != APPLICATION_CONTEXT:
        raise AssociateRefused(
            f"application context {decode_uid(items.app_context)!r} is not DICOM's",
            RJ_APPLICATION_CONTEXT,
        )
    return AssociateRQ(called, calling, list(items.contexts), items.max_length)


@dataclass(frozen=True, slots=True)
class _Items:
    """The variable items of a well-formed A-ASSOCIATE-RQ (the same for every association of
    one modality; its contexts are shared between the requests parsed from them: read only)."""

    app_context: bytes
    contexts: tuple[tuple[int, str, list[str]], ...]
    max_length: int


# A modality proposes the same contexts on every association: over a hundred of them from
# storescu, whose parsing was a fifth of the receiver's Python time with many short
# associations. Keyed by the items' bytes, so only an identical request is served from here;
# bounded in entries, each at most max_associate_rq bytes.
_ITEMS_SEEN: dict[bytes, _Items] = {}
_ITEMS_SEEN_MAX = 32
_ITEMS_LOCK = threading.Lock()


def _variable_items(raw: bytes) -> _Items:
    with _ITEMS_LOCK:
        known = _ITEMS_SEEN.get(raw)
    if known is not None:
        return known
    parsed = _parse_items(raw)
    with _ITEMS_LOCK:
        if len(_ITEMS_SEEN) >= _ITEMS_SEEN_MAX:
            del _ITEMS_SEEN[next(iter(_ITEMS_SEEN))]  # the oldest
        _ITEMS_SEEN[raw] = parsed
    return parsed


def _parse_items(raw: bytes) -> _Items:
    app_context: bytes | None = None
    contexts: list[tuple[int, str, list[str]]] = []
    seen_ids: set[int] = set()
    user_info = False
    max_length = 0
    for kind, value in _items(raw, "A-ASSOCIATE-RQ"):
        if kind == 0x10:
            if app_context is not None:
                raise ProtocolError("two application context items", ABORT_UNEXPECTED_PARAMETER)
            app_context = value
        elif kind == 0x20:
            contexts.append(_presentation_context(value, seen_ids))
        elif kind == 0x50:
            user_info = True
            for sub, sub_value in _items(value, "user information"):
                if sub == 0x51:
                    if len(sub_value) != 4:
                        raise ProtocolError("maximum length item is not 4 bytes",
                                            ABORT_INVALID_PARAMETER)
                    max_length = struct.unpack(">I", sub_value)[0]
        # Any other item type is skipped, as a later version of the standard may add some.
    if app_context is None:
        raise ProtocolError("no application context item", ABORT_INVALID_PARAMETER)
    if not contexts:
        raise ProtocolError("no presentation context item", ABORT_INVALID_PARAMETER)
    if not user_info:
        raise ProtocolError("no user information item", ABORT_INVALID_PARAMETER)
    return _Items(app_context, tuple(contexts), max_length)


def _presentation_context(value: bytes, seen: set[int]) -> tuple[int, str, list[str]]:
    if len(value) < 4:
        raise ProtocolError("presentation context item too short", ABORT_INVALID_PARAMETER)
    cid = value[0]
    if not cid % 2:  # PS3.8 §9.3.2.2: odd integers 1-255
        raise ProtocolError(f"presentation context id {cid} is even", ABORT_INVALID_PARAMETER)
    if cid in seen:
        raise ProtocolError(f"presentation context id {cid} proposed twice",
                            ABORT_INVALID_PARAMETER)
    seen.add(cid)
    abstract: str | None = None
    syntaxes: list[str] = []
    for sub, sub_value in _items(value[4:], f"presentation context {cid}"):
        if sub == 0x30:
            if abstract is not None:
                raise ProtocolError(f"presentation context {cid}: two abstract syntaxes",
                                    ABORT_UNEXPECTED_PARAMETER)
            abstract = decode_uid(sub_value)
        elif sub == 0x40:
            syntaxes.append(decode_uid(sub_value))
    if not abstract or not syntaxes:
        raise ProtocolError(
            f"presentation context {cid} lacks an abstract or a transfer syntax",
            ABORT_INVALID_PARAMETER,
        )
    return cid, abstract, syntaxes


def _item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(value)) + value


def pdu(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBI", kind, 0, len(body)) + body


def associate_ac(rq_body: bytes, results: list[tuple[int, int, str]], max_pdu: int) -> bytes:
    """A-ASSOCIATE-AC echoing the request's AE titles; ``results`` = (id, result, ts)."""
    body = struct.pack(">HH", 1, 0) + rq_body[4:36] + rq_body[36:68]
    body += _item(0x10, APPLICATION_CONTEXT)
    for cid, result, ts in results:
        # A refused context still carries a transfer syntax item, which the peer ignores.
        sub = _item(0x40, (ts or "1.2.840.10008.1.2").encode("ascii"))
        body += _item(0x21, bytes([cid, 0, result, 0]) + sub)
    user = (
        _item(0x51, struct.pack(">I", max_pdu))
        + _item(0x52, IMPLEMENTATION_UID)
        + _item(0x55, IMPLEMENTATION_VERSION)
    )
    body += _item(0x50, user)
    return pdu(0x02, body)


def associate_rj(result: int, source: int, reason: int) -> bytes:
    return pdu(0x03, bytes([0, result, source, reason]))


def abort(source: int = 2, reason: int = 0) -> bytes:
    return pdu(0x07, bytes([0, 0, source, reason]))


# --- DIMSE command sets (implicit VR little endian, group 0000) ---------------------------------


def parse_command(data: bytes) -> dict[int, bytes]:
    """The elements of a command set; an element running past its end is a protocol error."""
    out: dict[int, bytes] = {}
    pos, end = 0, len(data)
    while pos < end:
        if pos + 8 > end:
            raise ProtocolError("command set ends inside an element header",
                                ABORT_INVALID_PARAMETER)
        group, elem, length = struct.unpack_from("<HHI", data, pos)
        if group != 0x0000 or pos + 8 + length > end:
            raise ProtocolError(f"malformed command element ({group:04X},{elem:04X})",
                                ABORT_INVALID_PARAMETER)
        out[(group << 16) | elem] = data[pos + 8 : pos + 8 + length]
        pos += 8 + length
    return out


def command_ushort(cmd: dict[int, bytes], tag: int) -> int | None:
    """An US element of a command set, or None when absent or not 2 bytes long."""
    value = cmd.get(tag)
    return struct.unpack("<H", value)[0] if value is not None and len(value) == 2 else None


def _elem(tag: int, value: bytes) -> bytes:
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value


def _ui(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + (b"\x00" if len(raw) % 2 else b"")


def response_command(
    command: int, message_id: int, sop_class: str, sop_instance: str | None, status: int,
    comment: str | None = None,
) -> bytes:
    elems = [
        _elem(0x00000002, _ui(sop_class)),
        _elem(0x00000100, struct.pack("<H", command)),
        _elem(0x00000120, struct.pack("<H", message_id)),
        _elem(0x00000800, struct.pack("<H", 0x0101)),
        _elem(0x00000900, struct.pack("<H", status)),
    ]
    if comment:
        text = comment.encode("ascii", "replace")[:64]
        elems.append(_elem(0x00000902, text + (b" " if len(text) % 2 else b"")))
    if sop_instance:
        elems.append(_elem(0x00001000, _ui(sop_instance)))
    body = b"".join(elems)
    return _elem(0x00000000, struct.pack("<I", len(body))) + body


def p_data(context_id: int, command: bytes, max_length: int) -> bytes:
    """P-DATA-TF PDUs carrying a command set, fragmented to the peer's maximum length."""
    room = max(max_length - 6, 64) if max_length else len(command)
    out = b""
    for start in range(0, len(command), room):
        chunk = command[start : start + room]
        last = start + room >= len(command)
        pdv = bytes([context_id, 0x03 if last else 0x01]) + chunk
        out += pdu(0x04, struct.pack(">I", len(pdv)) + pdv)
    return out


NO_DATA_SET = 0x0101  # (0000,0800) Command Data Set Type: no data set follows


@dataclass
class Message:
    """A DIMSE message being reassembled from P-DATA-TF PDUs.

    PS3.7 §9.3.1 / PS3.8 annex E: a message's command fragments all come first, the last one
    flagged; then, only if the command says so, its data set's, on the same presentation
    context. Anything else aborts the association.
    """

    context_id: int = 0
    command: bytearray = field(default_factory=bytearray)
    command_done: bool = False
    has_data: bool = False  # the command announced a data set
    cmd: dict[int, bytes] = field(default_factory=dict)
    # The data set's fragments as received, never joined: the header is read from the first
    # and the file written from all of them with writev (joining was a copy of every image).
    # Once an instance is being streamed to its file, the fragments written are dropped.
    parts: list[memoryview] = field(default_factory=list)
    held: int = 0  # bytes in ``parts``
    received: int = 0  # data set bytes received in all
    data_done: bool = False
    # Once streaming began (plugins.dicom.streaming): the StreamedInstance, the header's
    # refusal (a status data set), or False for a data set to drop (answered from the command).
    sink: Any = None

    def add(self, body: bytearray, accepted: Container[int]) -> bool:
        """Add a P-DATA-TF body's fragments; True once the message is complete.

        The data set's fragments are views of ``body``, not copies.
        """
        pos, done, end = 0, False, len(body)
        view = memoryview(body)
        if end < 6:
            raise ProtocolError("P-DATA-TF without a PDV item", ABORT_INVALID_PARAMETER)
        while pos < end:
            if done:
                raise ProtocolError("PDV after the end of a message in the same PDU",
                                    ABORT_UNEXPECTED_PARAMETER)
            if pos + 6 > end:
                raise ProtocolError("malformed PDV item", ABORT_INVALID_PARAMETER)
            length = struct.unpack_from(">I", body, pos)[0]
            if length < 2 or pos + 4 + length > end:
                raise ProtocolError("malformed PDV item", ABORT_INVALID_PARAMETER)
            cid, control = body[pos + 4], body[pos + 5]
            if cid not in accepted:
                raise ProtocolError(f"PDV on presentation context {cid} not accepted",
                                    ABORT_INVALID_PARAMETER)
            if (self.command or self.parts or self.command_done) and cid != self.context_id:
                raise ProtocolError("a message's PDVs on two presentation contexts",
                                    ABORT_UNEXPECTED_PARAMETER)
            self.context_id = cid
            fragment = view[pos + 6 : pos + 4 + length]
            if control & 0x01:
                done = self._command(fragment, control)
            else:
                done = self._data(fragment, control)
            pos += 4 + length
        return done

    def _command(self, fragment: memoryview, control: int) -> bool:
        if self.command_done:
            raise ProtocolError("command fragment after the command's last one",
                                ABORT_UNEXPECTED_PARAMETER)
        self.command += fragment
        if not control & 0x02:
            return False
        self.command_done = True
        self.cmd = parse_command(bytes(self.command))
        data_set_type = command_ushort(self.cmd, 0x00000800)
        if data_set_type is None:
            raise ProtocolError("command without Command Data Set Type (0000,0800)",
                                ABORT_INVALID_PARAMETER)
        self.has_data = data_set_type != NO_DATA_SET
        return not self.has_data

    def _data(self, fragment: memoryview, control: int) -> bool:
        if not self.command_done:
            raise ProtocolError("data set fragment before the command's last fragment",
                                ABORT_UNEXPECTED_PARAMETER)
        if not self.has_data:
            raise ProtocolError("data set fragment for a command without a data set",
                                ABORT_UNEXPECTED_PARAMETER)
        self.parts.append(fragment)
        self.held += len(fragment)
        self.received += len(fragment)
        if control & 0x02:
            self.data_done = True
            return True
        return False
