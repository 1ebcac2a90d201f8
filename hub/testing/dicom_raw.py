"""A raw DICOM upper-layer client for tests: PDUs built by hand, sent as chosen.

Real peers (dcmtk, pynetdicom) never send a malformed request, a PDU larger than the maximum
they were told, or one byte a second; a hostile one does. :class:`RawPeer` speaks just enough
of PS3.8 to do all three: build an A-ASSOCIATE-RQ with any field wrong, send P-DATA-TF PDUs
of any shape, read what the hub answers.

    with RawPeer.connect(port) as peer:
        kind, body = peer.associate(called="VETHUB", calling="SCANNER1")
        peer.send(p_data_pdu([(1, 0x03, command_set({...}))]))
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterable, Sequence
from types import TracebackType

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"

A_ASSOCIATE_AC, A_ASSOCIATE_RJ, P_DATA_TF, A_RELEASE_RP, A_ABORT = 0x02, 0x03, 0x04, 0x06, 0x07


def _uid(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + (b"\x00" if len(raw) % 2 else b"")


def item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(value)) + value


def pdu(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBI", kind, 0, len(body)) + body


def presentation_context(cid: int, abstract: str, syntaxes: Sequence[str]) -> bytes:
    sub = item(0x30, _uid(abstract)) + b"".join(item(0x40, _uid(ts)) for ts in syntaxes)
    return item(0x20, bytes([cid, 0, 0, 0]) + sub)


def associate_rq(
    called: str = "VETHUB",
    calling: str = "SCANNER1",
    contexts: Iterable[tuple[int, str, Sequence[str]]] = ((1, VERIFICATION, (IMPLICIT_LE,)),),
    *,
    max_pdu: int = 16384,
    protocol_version: int = 1,
    application_context: str = APPLICATION_CONTEXT,
    items: bytes | None = None,
) -> bytes:
    """An A-ASSOCIATE-RQ PDU; ``items`` replaces every variable item when given."""
    fixed = struct.pack(">HH", protocol_version, 0)
    fixed += called.encode("ascii").ljust(16) + calling.encode("ascii").ljust(16) + bytes(32)
    if items is None:
        items = item(0x10, application_context.encode("ascii"))
        items += b"".join(presentation_context(cid, a, ts) for cid, a, ts in contexts)
        items += item(0x50, item(0x51, struct.pack(">I", max_pdu)) + item(0x52, b"1.2.3.4"))
    return pdu(0x01, fixed + items)


def element(tag: int, value: bytes) -> bytes:
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value


def command_set(elements: dict[int, bytes]) -> bytes:
    """A command set (implicit VR little endian) with its group length first."""
    body = b"".join(element(tag, value) for tag, value in sorted(elements.items()))
    return element(0x00000000, struct.pack("<I", len(body))) + body


def c_store_rq(sop_class: str, sop_instance: str, message_id: int = 1, *,
               drop: Iterable[int] = (), extra: dict[int, bytes] | None = None) -> bytes:
    """A C-STORE-RQ command set, without the elements whose tags are in ``drop``, with
    ``extra`` elements added."""
    elements = {
        0x00000002: _uid(sop_class), 0x00000100: struct.pack("<H", 0x0001),
        0x00000110: struct.pack("<H", message_id), 0x00000700: struct.pack("<H", 0),
        0x00000800: struct.pack("<H", 0x0000), 0x00001000: _uid(sop_instance),
    }
    elements.update(extra or {})
    for tag in drop:
        elements.pop(tag, None)
    return command_set(elements)


def dimse_rq(command: int, sop_class: str, message_id: int = 1) -> bytes:
    """A request without a data set (C-ECHO-RQ, a C-FIND-RQ shorn of its identifier, ...)."""
    return command_set({
        0x00000002: _uid(sop_class), 0x00000100: struct.pack("<H", command),
        0x00000110: struct.pack("<H", message_id), 0x00000800: struct.pack("<H", 0x0101),
    })


def p_data_pdu(pdvs: Iterable[tuple[int, int, bytes]]) -> bytes:
    """One P-DATA-TF PDU of PDVs (context id, control header, value)."""
    body = b"".join(struct.pack(">I", len(v) + 2) + bytes([cid, ctl]) + v for cid, ctl, v in pdvs)
    return pdu(P_DATA_TF, body)


def parse_command(data: bytes) -> dict[int, bytes]:
    out, pos = {}, 0
    while pos + 8 <= len(data):
        group, elem, length = struct.unpack_from("<HHI", data, pos)
        out[(group << 16) | elem] = data[pos + 8 : pos + 8 + length]
        pos += 8 + length
    return out


class RawPeer:
    """One TCP connection to a DICOM acceptor, written and read a PDU at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.max_pdu = 0  # the acceptor's maximum length, from its A-ASSOCIATE-AC

    @classmethod
    def connect(cls, port: int, host: str = "127.0.0.1", *, timeout: float = 30,
                source: str | None = None) -> RawPeer:
        sock = socket.create_connection(
            (host, port), timeout=timeout, source_address=(source, 0) if source else None
        )
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock)

    def __enter__(self) -> RawPeer:
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def dribble(self, data: bytes, interval: float) -> bool:
        """Send ``data`` a byte at a time, ``interval`` seconds apart; False once the acceptor
        closed the connection (or reset it) before the last byte."""
        for n in range(len(data)):
            try:
                self.sock.sendall(data[n : n + 1])
            except OSError:
                return False
            if self.closed(interval):
                return False
        return True

    def closed(self, wait: float) -> bool:
        """True when the acceptor closed its end within ``wait`` seconds (whatever it sent
        first is read and dropped)."""
        deadline = time.monotonic() + wait
        try:
            while (left := deadline - time.monotonic()) > 0:
                self.sock.settimeout(left)
                if not self.sock.recv(65536):
                    return True
        except TimeoutError:
            return False
        except OSError:
            return True
        return False

    def _exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError(f"closed after {len(data)} of {n} bytes")
            data += chunk
        return data

    def read_pdu(self) -> tuple[int, bytes]:
        kind, _, length = struct.unpack(">BBI", self._exactly(6))
        return kind, self._exactly(length)

    def associate(self, called: str = "VETHUB", calling: str = "SCANNER1", **kw) -> tuple[int, bytes]:
        """Send an A-ASSOCIATE-RQ (see :func:`associate_rq`); the answer's (type, body)."""
        self.send(associate_rq(called, calling, **kw))
        kind, body = self.read_pdu()
        if kind == A_ASSOCIATE_AC:
            self.max_pdu = _max_length(body[68:])
        return kind, body

    def response(self) -> dict[int, bytes]:
        """The next DIMSE response's command set (responses carry no data set here)."""
        command = b""
        while True:
            kind, body = self.read_pdu()
            if kind != P_DATA_TF:
                raise ConnectionError(f"PDU type {kind:#x} instead of a response: {body.hex()}")
            pos = 0
            while pos < len(body):
                length = struct.unpack_from(">I", body, pos)[0]
                control = body[pos + 5]
                command += body[pos + 6 : pos + 4 + length]
                pos += 4 + length
                if control & 0x03 == 0x03:
                    return parse_command(command)

    def c_store(self, cid: int, sop_class: str, sop_instance: str, data: bytes | Iterable[bytes],
                message_id: int = 1) -> int:
        """Send a C-STORE (``data``: the data set, or its pieces, sent as they come); its
        status. Data set PDVs are cut to the acceptor's maximum length."""
        self.send(p_data_pdu([(cid, 0x03, c_store_rq(sop_class, sop_instance, message_id))]))
        room = (self.max_pdu or 16384) - 6
        pending = b""
        pieces = [data] if isinstance(data, bytes) else data
        for piece in pieces:
            pending += piece
            while len(pending) > room:
                self.send(p_data_pdu([(cid, 0x00, pending[:room])]))
                pending = pending[room:]
        self.send(p_data_pdu([(cid, 0x02, pending)]))
        return status_of(self.response())

    def release(self) -> int:
        self.send(pdu(0x05, bytes(4)))
        kind, _ = self.read_pdu()
        return kind


def status_of(command: dict[int, bytes]) -> int:
    return struct.unpack("<H", command[0x00000900])[0]


def abort_reason(body: bytes) -> tuple[int, int]:
    """(source, reason) of an A-ABORT's body."""
    return body[2], body[3]


def _max_length(items: bytes) -> int:
    pos = 0
    while pos + 4 <= len(items):
        kind, length = items[pos], struct.unpack_from(">H", items, pos + 2)[0]
        value = items[pos + 4 : pos + 4 + length]
        if kind == 0x50:
            sub = 0
            while sub + 4 <= len(value):
                skind, slen = value[sub], struct.unpack_from(">H", value, sub + 2)[0]
                if skind == 0x51:
                    return struct.unpack(">I", value[sub + 4 : sub + 8])[0]
                sub += 4 + slen
        pos += 4 + length
    return 0


def large_instance(pixel_bytes: int, *, sop_uid: str | None = None,
                   chunk: int = 1 << 20) -> tuple[str, str, bytes, Iterable[bytes]]:
    """A CT image data set (explicit VR little endian) of ``pixel_bytes`` of pixel data, made
    while it is sent: (SOP class, SOP instance UID, the bytes before the pixel data, the pixel
    data's pieces). The pixels are a repeated pseudo-random ``chunk``, so a gigabyte costs
    the sender a megabyte."""
    import random

    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    from hub.testing.dicom import synthetic_dataset

    if pixel_bytes % 2:
        raise ValueError("pixel data has an even length")
    ds = synthetic_dataset(sop_uid=sop_uid)
    del ds.PixelData
    ds.Rows, ds.Columns, ds.NumberOfFrames = 1, 1, pixel_bytes // 2  # frames of one pixel
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    head = fp.getvalue() + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, pixel_bytes)
    block = random.Random(pixel_bytes).randbytes(chunk)

    def pieces() -> Iterable[bytes]:
        left = pixel_bytes
        while left:
            n = min(left, chunk)
            yield block[:n]
            left -= n

    return str(ds.SOPClassUID), str(ds.SOPInstanceUID), head, pieces()
