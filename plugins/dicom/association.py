"""The receiver's associations: one thread each, on a blocking socket.

Everything an instance needs happens in its association's thread: read the PDUs straight into
their buffers, check the header, write the file durably, hand the row to the committer thread
and wait for the commit, answer. The event loop is not on that path (only for checking who is
calling and recording a rejection): receiving every association on the loop and handing each
instance to a worker thread and back cost more thread wake-ups, and more waiting for the GIL,
than the work itself (docs/performance.md). The socket calls, the file writes and SQLite all
release the GIL, so the threads of several associations overlap.

It implements only what a Storage/Verification SCP needs; anything else is answered with an
A-ABORT.
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
import threading
import time
from typing import TYPE_CHECKING

from .net import nodelay
from .ul import (
    PC_ABSTRACT_NOT_SUPPORTED,
    PC_ACCEPT,
    PC_TS_NOT_SUPPORTED,
    VERIFICATION,
    Message,
    ProtocolError,
    abort,
    associate_ac,
    associate_rj,
    decode_uid,
    p_data,
    parse_associate_rq,
    parse_command,
    pdu,
    response_command,
)

if TYPE_CHECKING:
    from .receiver import Caller, DicomReceiver

log = logging.getLogger(__name__)

LINGER_SECONDS = 5.0
MAX_PDU = 64 * 1024 * 1024  # refuse a PDU longer than this (PS3.8 allows 4 GiB; nobody sends it)
STOP_TIMEOUT = 10.0
BACKLOG = 128
ACCEPT_BACKOFF = 0.1  # seconds, after accept() failed (e.g. EMFILE) with the listener still open


class PduTooLong(ProtocolError):
    def __init__(self, length: int) -> None:
        super().__init__(f"PDU of {length} bytes")


class AssociationServer:
    """Accepts associations for a :class:`DicomReceiver`, one thread per association."""

    def __init__(self, receiver: DicomReceiver, supported: set[str], transfer_syntaxes: set[str]):
        self.receiver = receiver
        self.supported = supported
        self.transfer_syntaxes = transfer_syntaxes
        self.active = 0
        self._lock = threading.Lock()
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._listener: socket.socket | None = None
        self._owner = True
        self._acceptor: threading.Thread | None = None

    def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0 picks a free port); returns the port."""
        listener = socket.create_server((host, port), backlog=BACKLOG, family=_family(host))
        return self.serve(listener)

    def serve(self, listener: socket.socket, *, owner: bool = True) -> int:
        """Accept on ``listener``, already listening; returns its port.

        A worker process (``owner=False``) shares the hub process's listener: every process
        blocks in accept() on it and the kernel wakes the one that has waited longest, so
        associations go round the processes in turn, and a connection waiting in the backlog
        is never lost with a process. Only the owner shuts it down when stopping, since a
        shutdown stops every process's accept()."""
        self._listener, self._owner = listener, owner
        self._acceptor = threading.Thread(
            target=self._accept, args=(listener,), name="vethub-dicom-accept", daemon=True
        )
        self._acceptor.start()
        return int(listener.getsockname()[1])

    def stop_accepting(self, timeout: float = STOP_TIMEOUT) -> None:
        """Blocking: accept no new association (the owner: in any process)."""
        listener, self._listener = self._listener, None
        acceptor, self._acceptor = self._acceptor, None
        if listener is None or not self._owner:
            # A sharer's acceptor stays blocked in accept() until the owner shuts the listener
            # down (the hub stops accepting before it stops its workers) or the process exits.
            return
        _shutdown(listener)  # wakes the blocked accept()
        listener.close()
        if acceptor is not None:
            acceptor.join(timeout)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Blocking: stop accepting, abort the associations in progress, wait for their threads."""
        deadline = time.monotonic() + timeout  # for all the threads together
        self.stop_accepting(timeout)
        with self._lock:
            conns = dict(self._conns)
        for conn in conns:
            _shutdown(conn)  # wakes a blocked recv(); the thread sends nothing more
        for thread in conns.values():
            thread.join(max(0.0, deadline - time.monotonic()))

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, peer = listener.accept()
            except OSError as err:
                if self._listener is not listener:  # stop() shut it down
                    return
                if err.errno == errno.EINVAL:  # not listening: the owner shut it down
                    return
                # Out of file descriptors or memory, or a connection reset before it was
                # accepted: keep listening, and give the process a moment to free some.
                log.warning("accepting a DICOM association failed: %s", err)
                time.sleep(ACCEPT_BACKOFF)
                continue
            if self._listener is not listener:  # stopping: only a sharer gets here
                from .receiver import RJ_BUSY  # circular at import time

                _send_quietly(conn, associate_rj(*RJ_BUSY))
                conn.close()
                return
            thread = threading.Thread(
                target=self._serve, args=(conn, str(peer[0])), name="vethub-dicom-assoc",
                daemon=True,
            )
            with self._lock:
                self._conns[conn] = thread
                self.active += 1
            thread.start()

    def _serve(self, conn: socket.socket, address: str) -> None:
        nodelay(conn)
        conn.settimeout(self.receiver.config.network_timeout)
        try:
            Association(self, conn, address).run()
        except (ProtocolError, ConnectionError, TimeoutError) as err:
            log.info("association from %s ended: %s", address, err or type(err).__name__)
            _send_quietly(conn, abort())
        except OSError as err:  # the socket failed, or the receiver is stopping
            log.info("association from %s ended: %s", address, err)
        except Exception:
            log.exception("association from %s failed", address)
            _send_quietly(conn, abort())
        finally:
            with self._lock:
                self.active -= 1
            _linger(conn)
            with self._lock:
                self._conns.pop(conn, None)
            conn.close()


class Association:
    def __init__(self, server: AssociationServer, conn: socket.socket, address: str) -> None:
        self.server = server
        self.receiver = server.receiver
        self.conn = conn
        self.address = address
        self.caller: Caller | None = None
        self.accepted: dict[int, tuple[str, str]] = {}  # context id -> (abstract, transfer)
        self.peer_max = 0
        self._head = bytearray(6)

    def run(self) -> None:
        kind, body = self._read_pdu()
        if kind != 0x01:
            raise ProtocolError(f"expected A-ASSOCIATE-RQ, got PDU type {kind:#x}")
        if not self._negotiate(body):
            return
        message = Message()
        while True:
            kind, body = self._read_pdu()
            if kind == 0x04:
                if message.add(body, self.accepted):
                    self._dispatch(message)
                    message = Message()
            elif kind == 0x05:
                self.conn.sendall(pdu(0x06, bytes(4)))
                return
            elif kind == 0x07:
                return
            else:
                raise ProtocolError(f"unexpected PDU type {kind:#x}")

    # --- reading -------------------------------------------------------------------------------

    def _read_pdu(self) -> tuple[int, bytearray]:
        self._fill(memoryview(self._head))
        kind, _, length = struct.unpack(">BBI", self._head)
        if length > MAX_PDU:
            raise PduTooLong(length)
        body = bytearray(length)
        self._fill(memoryview(body))
        return kind, body

    def _fill(self, view: memoryview) -> None:
        """Receive exactly ``len(view)`` bytes into ``view``, in as few calls as the socket allows."""
        recv_into, got, want = self.conn.recv_into, 0, len(view)
        while got < want:
            n = recv_into(view[got:])
            if not n:
                raise ConnectionError("the peer closed the connection")
            got += n

    # --- association negotiation ---------------------------------------------------------------

    def _negotiate(self, body: bytearray) -> bool:
        from .receiver import RJ_BUSY, RJ_CALLED_AE, RJ_CALLING_AE

        rq = parse_associate_rq(bytes(body))
        config = self.receiver.config
        data = {"calling_ae": rq.calling_ae, "called_ae": rq.called_ae, "address": self.address}
        if self.server.active > config.max_associations:
            self.conn.sendall(associate_rj(0x02, 0x03, 0x02))  # transient, local limit exceeded
            return False
        if rq.called_ae != config.ae_title:
            self._reject(
                RJ_CALLED_AE,
                f"called AE {rq.called_ae} is not this hub's ({config.ae_title}); "
                f"calling AE {rq.calling_ae}, from {self.address}",
                {**data, "reason": "called_ae"},
            )
            return False
        try:
            caller, why = self.receiver._call(self.receiver._identify(rq.calling_ae, self.address))
        except Exception as err:
            log.exception("association from %s could not be checked", self.address)
            self._reject(
                RJ_BUSY, f"calling AE {rq.calling_ae} from {self.address} could not be checked: "
                f"{err}", {**data, "reason": "error"},
            )
            return False
        if caller is None:
            self._reject(RJ_CALLING_AE, why or "", {**data, "reason": "calling_ae"})
            return False
        self.caller = caller
        self.peer_max = rq.max_length
        self.conn.sendall(associate_ac(bytes(body), self._contexts(rq.contexts), config.max_pdu))
        return True

    def _contexts(self, proposed: list[tuple[int, str, list[str]]]) -> list[tuple[int, int, str]]:
        results = []
        for cid, abstract, syntaxes in proposed:
            if abstract not in self.server.supported:
                results.append((cid, PC_ABSTRACT_NOT_SUPPORTED, ""))
                continue
            chosen = next((ts for ts in syntaxes if ts in self.server.transfer_syntaxes), None)
            if chosen is None:
                results.append((cid, PC_TS_NOT_SUPPORTED, ""))
                continue
            self.accepted[cid] = (abstract, chosen)
            results.append((cid, PC_ACCEPT, chosen))
        return results

    def _reject(self, rsd: tuple[int, int, int], message: str, data: dict) -> None:
        try:
            self.receiver._call(self.receiver._record_rejection(message, data))
        except Exception:  # the rejection still goes out; the log keeps the reason
            log.exception("could not record the rejection: %s", message)
        log.warning("association rejected: %s", message)
        self.conn.sendall(associate_rj(*rsd))

    # --- DIMSE ---------------------------------------------------------------------------------

    def _dispatch(self, message: Message) -> None:
        cmd = parse_command(bytes(message.command))
        field_ = struct.unpack("<H", cmd.get(0x00000100, b"\x00\x00"))[0]
        msg_id = struct.unpack("<H", cmd.get(0x00000110, b"\x00\x00"))[0]
        sop_class = decode_uid(cmd.get(0x00000002, b""))
        if field_ == 0x0030:  # C-ECHO-RQ
            rsp = response_command(0x8030, msg_id, sop_class or VERIFICATION, None, 0x0000)
        elif field_ == 0x0001:  # C-STORE-RQ
            sop_instance = decode_uid(cmd.get(0x00001000, b""))
            status, comment = self._store(sop_class, sop_instance, message)
            rsp = response_command(0x8001, msg_id, sop_class, sop_instance, status, comment)
        else:
            raise ProtocolError(f"DIMSE command {field_:#06x} is not supported here")
        self.conn.sendall(p_data(message.context_id, rsp, self.peer_max))

    def _store(self, sop_class: str, sop_instance: str, message: Message) -> tuple[int, str | None]:
        assert self.caller is not None
        transfer_syntax = self.accepted[message.context_id][1]
        try:
            status = self.receiver.receive_instance(
                self.caller, sop_class, sop_instance, transfer_syntax, message.parts
            )
        except Exception as err:  # never let one instance take the association down
            log.exception("C-STORE failed unexpectedly")
            return 0xC000, f"processing failure: {type(err).__name__}"
        return int(status.Status), str(status.get("ErrorComment", "")) or None


def bound_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` and not yet listening: the hub binds it first, so
    a port in use fails at once, and listens only once its worker processes are ready."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # not connected, or already closed
        pass


def _send_quietly(conn: socket.socket, data: bytes) -> None:
    try:
        conn.sendall(data)
    except OSError:
        pass


def _linger(conn: socket.socket) -> None:
    """Let the peer close first (PS3.8 ARTIM): after an A-ASSOCIATE-RJ, A-RELEASE-RP or
    A-ABORT the requestor closes the connection. Closing at once can reset it before the peer
    has read our last PDU, which it then sees as an abort. Whatever it still sends is dropped."""
    deadline = time.monotonic() + LINGER_SECONDS
    try:
        while (left := deadline - time.monotonic()) > 0:
            conn.settimeout(left)
            if not conn.recv(65536):
                return
    except OSError:  # timed out, reset, or shut down by stop()
        pass
