"""An asyncio DICOM upper layer (PS3.8) for the receiver: associations, C-ECHO and C-STORE.

pynetdicom runs two polling threads per association (PERFORMANCE.md, docs/performance.md), so
every blocking call in the hub waits for the GIL. This acceptor runs on the hub's event loop
instead: it reads PDUs with ``asyncio`` streams, negotiates presentation contexts, reassembles
P-DATA into a command set and a data set, and hands the data set to the same checks and
durable write as the pynetdicom receiver (in a worker thread), then awaits the commit before
answering. It implements only what a Storage/Verification SCP needs; anything else is answered
with an A-ABORT.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from io import BytesIO
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset

from .net import nodelay
from .pdu_reader import PduReader, ProtocolError

if TYPE_CHECKING:
    from .receiver import Caller, DicomReceiver

log = logging.getLogger(__name__)

APPLICATION_CONTEXT = b"1.2.840.10008.3.1.1.1"
IMPLEMENTATION_UID = b"1.2.826.0.1.3680043.10.1207.1"
IMPLEMENTATION_VERSION = b"VETHUB_UL_1"
VERIFICATION = "1.2.840.10008.1.1"
READ_TIMEOUT = 60.0
LINGER_SECONDS = 5.0

# PS3.8 9.3.3.2 presentation context results
PC_ACCEPT, PC_ABSTRACT_NOT_SUPPORTED, PC_TS_NOT_SUPPORTED = 0, 3, 4


def _uid(raw: bytes) -> str:
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
                    abstract = _uid(sub_value)
                elif sub == 0x40:
                    syntaxes.append(_uid(sub_value))
            rq.contexts.append((value[0], abstract, syntaxes))
        elif kind == 0x50:
            for sub, sub_value in _items(value):
                if sub == 0x51 and len(sub_value) == 4:
                    rq.max_length = struct.unpack(">I", sub_value)[0]
    return rq


def _item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(value)) + value


def _pdu(kind: int, body: bytes) -> bytes:
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
    return _pdu(0x02, body)


def associate_rj(result: int, source: int, reason: int) -> bytes:
    return _pdu(0x03, bytes([0, result, source, reason]))


def abort(source: int = 2, reason: int = 0) -> bytes:
    return _pdu(0x07, bytes([0, 0, source, reason]))


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
        out += _pdu(0x04, struct.pack(">I", len(pdv)) + pdv)
    return out


@dataclass
class _Message:
    context_id: int = 0
    command: bytearray = field(default_factory=bytearray)
    command_done: bool = False
    # Fragments as received, joined once at the end: growing a BytesIO fragment by fragment
    # re-copied a large image on every reallocation (a tenth of the receiver's CPU).
    parts: list[memoryview] = field(default_factory=list)
    data_done: bool = False

    def dataset(self) -> BytesIO:
        """The data set; BytesIO shares the joined bytes instead of copying them."""
        return BytesIO(b"".join(self.parts))


class UpperLayerServer:
    """Accepts associations for a :class:`DicomReceiver` on the running event loop."""

    def __init__(self, receiver: DicomReceiver, supported: set[str], transfer_syntaxes: set[str]):
        self.receiver = receiver
        self.supported = supported
        self.transfer_syntaxes = transfer_syntaxes
        self.active = 0
        self.server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self, host: str, port: int, reuse_port: bool = False) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: PduReader(self._connected), host, port, reuse_port=reuse_port or None
        )
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.server.wait_closed()
            self.server = None

    def _connected(self, conn: PduReader) -> None:
        task = asyncio.get_running_loop().create_task(self._handle(conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, conn: PduReader) -> None:
        assert conn.transport is not None
        sock = conn.transport.get_extra_info("socket")
        if sock is not None:
            nodelay(sock)
        peer = conn.transport.get_extra_info("peername") or ("?", 0)
        self.active += 1
        try:
            await Association(self, conn, str(peer[0])).run()
        except (ProtocolError, asyncio.IncompleteReadError, ConnectionError, TimeoutError) as err:
            log.info("association from %s ended: %s", peer[0], err or type(err).__name__)
            conn.write(abort())
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("association from %s failed", peer[0])
        finally:
            # Let the peer close first (PS3.8 ARTIM): after an A-ASSOCIATE-RJ, A-RELEASE-RP or
            # A-ABORT the requestor closes the connection. Closing at once can reset it before
            # the peer has read our last PDU, which it then sees as an abort.
            try:
                await conn.linger(LINGER_SECONDS)
            except asyncio.CancelledError:
                pass
            self.active -= 1
            conn.close()


class Association:
    def __init__(self, server: UpperLayerServer, conn: PduReader, address: str) -> None:
        self.server = server
        self.receiver = server.receiver
        self.conn = conn
        self.address = address
        self.caller: Caller | None = None
        self.accepted: dict[int, tuple[str, str]] = {}  # context id -> (abstract, transfer)
        self.peer_max = 0

    async def _read_pdu(self) -> tuple[int, bytearray]:
        # asyncio.timeout, not wait_for: wait_for wraps each read in a new task (3.11), and a
        # large image is hundreds of PDUs.
        async with asyncio.timeout(READ_TIMEOUT):
            return await self.conn.read_pdu()

    async def _send(self, data: bytes) -> None:
        # Every PDU the hub sends is small (an AC, RJ, response or release): no back-pressure.
        self.conn.write(data)

    async def run(self) -> None:
        kind, body = await self._read_pdu()
        if kind != 0x01:
            raise ProtocolError(f"expected A-ASSOCIATE-RQ, got PDU type {kind:#x}")
        if not await self._negotiate(body):
            return
        message = _Message()
        while True:
            kind, body = await self._read_pdu()
            if kind == 0x04:
                if await self._p_data(body, message):
                    await self._dispatch(message)
                    message = _Message()
            elif kind == 0x05:
                await self._send(_pdu(0x06, bytes(4)))
                return
            elif kind == 0x07:
                return
            else:
                raise ProtocolError(f"unexpected PDU type {kind:#x}")

    async def _negotiate(self, body: bytes) -> bool:
        from .receiver import RJ_BUSY, RJ_CALLED_AE, RJ_CALLING_AE

        rq = parse_associate_rq(body)
        config = self.receiver.config
        data = {"calling_ae": rq.calling_ae, "called_ae": rq.called_ae, "address": self.address}
        if self.server.active > config.max_associations:
            await self._send(associate_rj(0x02, 0x03, 0x02))  # transient, local limit exceeded
            return False
        if rq.called_ae != config.ae_title:
            await self._reject(
                RJ_CALLED_AE,
                f"called AE {rq.called_ae} is not this hub's ({config.ae_title}); "
                f"calling AE {rq.calling_ae}, from {self.address}",
                {**data, "reason": "called_ae"},
            )
            return False
        try:
            caller, why = await self.receiver._identify(rq.calling_ae, self.address)
        except Exception as err:
            log.exception("association from %s could not be checked", self.address)
            await self._reject(
                RJ_BUSY, f"calling AE {rq.calling_ae} from {self.address} could not be checked: "
                f"{err}", {**data, "reason": "error"},
            )
            return False
        if caller is None:
            await self._reject(RJ_CALLING_AE, why or "", {**data, "reason": "calling_ae"})
            return False
        self.caller = caller
        self.peer_max = rq.max_length
        results = []
        for cid, abstract, syntaxes in rq.contexts:
            if abstract not in self.server.supported:
                results.append((cid, PC_ABSTRACT_NOT_SUPPORTED, ""))
                continue
            chosen = next((ts for ts in syntaxes if ts in self.server.transfer_syntaxes), None)
            if chosen is None:
                results.append((cid, PC_TS_NOT_SUPPORTED, ""))
                continue
            self.accepted[cid] = (abstract, chosen)
            results.append((cid, PC_ACCEPT, chosen))
        await self._send(associate_ac(body, results, config.max_pdu))
        return True

    async def _reject(self, rsd: tuple[int, int, int], message: str, data: dict) -> None:
        try:
            await self.receiver._record_rejection(message, data)
        except Exception:
            log.exception("could not record the rejection: %s", message)
        log.warning("association rejected: %s", message)
        await self._send(associate_rj(*rsd))

    async def _p_data(self, body: bytes, message: _Message) -> bool:
        """Add a P-DATA-TF's fragments to ``message``; True once the message is complete."""
        pos, done = 0, False
        view = memoryview(body)
        while pos + 6 <= len(body):
            length = struct.unpack(">I", body[pos : pos + 4])[0]
            if length < 2 or pos + 4 + length > len(body):
                raise ProtocolError("malformed PDV item")
            cid, control = body[pos + 4], body[pos + 5]
            fragment = view[pos + 6 : pos + 4 + length]
            if cid not in self.accepted:
                raise ProtocolError(f"PDV on presentation context {cid} not accepted")
            message.context_id = cid
            if control & 0x01:
                message.command += fragment
                if control & 0x02:
                    message.command_done = True
                    cmd = parse_command(bytes(message.command))
                    data_type = struct.unpack("<H", cmd.get(0x00000800, b"\x01\x01"))[0]
                    if data_type == 0x0101:
                        done = True
            else:
                message.parts.append(fragment)
                if control & 0x02:
                    message.data_done = True
                    done = True
            pos += 4 + length
        return done

    async def _dispatch(self, message: _Message) -> None:
        cmd = parse_command(bytes(message.command))
        field_ = struct.unpack("<H", cmd.get(0x00000100, b"\x00\x00"))[0]
        msg_id = struct.unpack("<H", cmd.get(0x00000110, b"\x00\x00"))[0]
        sop_class = _uid(cmd.get(0x00000002, b""))
        abstract, transfer_syntax = self.accepted[message.context_id]
        if field_ == 0x0030:  # C-ECHO-RQ
            rsp = response_command(0x8030, msg_id, sop_class or VERIFICATION, None, 0x0000)
        elif field_ == 0x0001:  # C-STORE-RQ
            sop_instance = _uid(cmd.get(0x00001000, b""))
            status, comment = await self._store(sop_class, sop_instance, transfer_syntax, message)
            rsp = response_command(0x8001, msg_id, sop_class, sop_instance, status, comment)
        else:
            raise ProtocolError(f"DIMSE command {field_:#06x} is not supported here")
        await self._send(p_data(message.context_id, rsp, self.peer_max))

    async def _store(
        self, sop_class: str, sop_instance: str, transfer_syntax: str, message: _Message
    ) -> tuple[int, str | None]:
        from .receiver import Prepared, commit_failure
        from .storage import StorageError

        assert self.caller is not None
        loop = asyncio.get_running_loop()
        receiver = self.receiver
        committed: list[asyncio.Future[Any]] = []

        def file_row(prepared: Prepared) -> None:  # on the loop, while the file is written
            row = receiver.committer.enqueue(prepared.item, work)
            # a failed write fails the row too, and nobody awaits it then
            row.add_done_callback(lambda f: f.cancelled() or f.exception())
            committed.append(row)

        work = receiver.executor.submit(
            receiver.receive, self.caller, sop_class, sop_instance, transfer_syntax,
            message.dataset(), lambda prepared: loop.call_soon_threadsafe(file_row, prepared),
        )
        try:
            try:
                result = await asyncio.wrap_future(work)
            except StorageError as err:  # the committer drops the row (it commits none)
                return err.status, str(err)
            if isinstance(result, Dataset):
                return int(result.Status), str(result.get("ErrorComment", "")) or None
            # file_row ran before this: both were handed to the loop in that order
            try:
                await committed[0]
                return 0x0000, None
            except Exception as err:
                failure = commit_failure(result.item, err)
                return int(failure.Status), str(failure.get("ErrorComment", "")) or None
        except Exception as err:  # never let one instance take the receiver down
            log.exception("C-STORE failed unexpectedly")
            return 0xC000, f"processing failure: {type(err).__name__}"
