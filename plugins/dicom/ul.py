"""The DICOM upper layer's PDUs and DIMSE command sets (PS3.8, PS3.7), as bytes.

What a Storage/Verification SCP needs, and nothing else: parse an A-ASSOCIATE-RQ, build the
AC/RJ/abort/release PDUs, parse a command set and build a response, split a response into
P-DATA-TF PDUs. :mod:`plugins.dicom.association` does the I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Container, Iterable
from dataclasses import dataclass, field


class ProtocolError(Exception):
    """The peer broke the protocol; the association is aborted."""


APPLICATION_CONTEXT = b"1.2.840.10008.3.1.1.1"
IMPLEMENTATION_UID = b"1.2.826.0.1.3680043.10.1207.1"
IMPLEMENTATION_VERSION = b"VETHUB_UL_1"
VERIFICATION = "1.2.840.10008.1.1"

# PS3.8 9.3.3.2 presentation context results
PC_ACCEPT, PC_ABSTRACT_NOT_SUPPORTED, PC_TS_NOT_SUPPORTED = 0, 3, 4


def decode_uid(raw: bytes) -> str:
    return raw.rstrip(b"\x00 ").decode("ascii", "replace")


def _items(data: bytes) -> Iterable[tuple[int, bytes]]:
    """(type, value) of the variable items of an A-ASSOCIATE PDU (or of a sub-item list)."""
    pos = 0
    while pos + 4 <= len(data):
        kind, length = data[pos], struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        yield kind, data[pos + 4 : pos + 4 + length]
        pos += 4 + length


@dataclass
class AssociateRQ:
    called_ae: str
    calling_ae: str
    contexts: list[tuple[int, str, list[str]]]  # (id, abstract syntax, transfer syntaxes)
    max_length: int = 0


def parse_associate_rq(body: bytes) -> AssociateRQ:
    if len(body) < 68:
        raise ProtocolError("A-ASSOCIATE-RQ too short")
    called = body[4:20].decode("ascii", "replace").strip()
    calling = body[20:36].decode("ascii", "replace").strip()
    rq = AssociateRQ(called, calling, [])
    for kind, value in _items(body[68:]):
        if kind == 0x20 and len(value) >= 4:
            abstract, syntaxes = "", []
            for sub, sub_value in _items(value[4:]):
                if sub == 0x30:
                    abstract = decode_uid(sub_value)
                elif sub == 0x40:
                    syntaxes.append(decode_uid(sub_value))
            rq.contexts.append((value[0], abstract, syntaxes))
        elif kind == 0x50:
            for sub, sub_value in _items(value):
                if sub == 0x51 and len(sub_value) == 4:
                    rq.max_length = struct.unpack(">I", sub_value)[0]
    return rq


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
    out: dict[int, bytes] = {}
    pos = 0
    while pos + 8 <= len(data):
        group, elem, length = struct.unpack("<HHI", data[pos : pos + 8])
        out[(group << 16) | elem] = data[pos + 8 : pos + 8 + length]
        pos += 8 + length
    return out


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


@dataclass
class Message:
    """A DIMSE message being reassembled from P-DATA-TF PDUs."""

    context_id: int = 0
    command: bytearray = field(default_factory=bytearray)
    command_done: bool = False
    # The data set's fragments as received, never joined: the header is read from the first
    # and the file written from all of them with writev (joining was a copy of every image).
    parts: list[memoryview] = field(default_factory=list)
    data_done: bool = False

    def add(self, body: bytearray, accepted: Container[int]) -> bool:
        """Add a P-DATA-TF body's fragments; True once the message is complete.

        The data set's fragments are views of ``body``, not copies.
        """
        pos, done = 0, False
        view = memoryview(body)
        while pos + 6 <= len(body):
            length = struct.unpack(">I", body[pos : pos + 4])[0]
            if length < 2 or pos + 4 + length > len(body):
                raise ProtocolError("malformed PDV item")
            cid, control = body[pos + 4], body[pos + 5]
            if cid not in accepted:
                raise ProtocolError(f"PDV on presentation context {cid} not accepted")
            self.context_id = cid
            fragment = view[pos + 6 : pos + 4 + length]
            if control & 0x01:  # command
                self.command += fragment
                if control & 0x02:
                    self.command_done = True
                    cmd = parse_command(bytes(self.command))
                    if struct.unpack("<H", cmd.get(0x00000800, b"\x01\x01"))[0] == 0x0101:
                        done = True  # no data set follows
            else:
                self.parts.append(fragment)
                if control & 0x02:
                    self.data_done = True
                    done = True
            pos += 4 + length
        return done
