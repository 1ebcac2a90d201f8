"""The receiver's associations: one thread each, on a blocking socket, once the caller's
A-ASSOCIATE-RQ is in (until then the connection waits on :mod:`.negotiator`'s selector).

Everything an instance needs happens in its association's thread: read the PDUs straight into
their buffers, check the header, write the file durably, hand the row to the committer thread
and wait for the commit, answer. The event loop is not on that path (only for checking who is
calling and recording a rejection): receiving every association on the loop and handing each
instance to a worker thread and back cost more thread wake-ups, and more waiting for the GIL,
than the work itself (docs/performance.md). The socket calls, the file writes and SQLite all
release the GIL, so the threads of several associations overlap.

What a peer can make the hub hold is bounded before it is known (docs/dicom.md, "Limits"):

- a connection that has not completed its A-ASSOCIATE-RQ is *negotiating*: at most
  ``max_negotiating`` of them at once (more are refused at once), each holding no thread and
  an A-ASSOCIATE-RQ buffer of at most ``max_associate_rq`` bytes that grows only as bytes
  arrive, and each within ``artim_timeout`` seconds of its connect (PS3.8 §9.1.5 ARTIM: a
  total deadline, not one per read, so a peer sending a byte a second is still closed);
- only an accepted association counts against ``max_associations``;
- a P-DATA-TF PDU longer than the maximum length the hub advertised (``max_pdu``) is aborted
  before its body is read; a large data set is written to its file while it arrives
  (:mod:`plugins.dicom.streaming`).

It implements only what a Storage/Verification SCP needs: any other DIMSE request is answered
with a failure status (0x0211, unrecognised operation), and a protocol violation with an
A-ABORT giving the PS3.8 reason.
"""

from __future__ import annotations

import errno
import logging
import select
import socket
import ssl
import struct
import threading
import time
from typing import TYPE_CHECKING

from .acceptance import RJ_BUSY, Rejection
from .negotiator import Negotiator
from .net import nodelay
from .streaming import STREAM_AFTER, StreamedInstance
from .ul import (
    ABORT_INVALID_PARAMETER,
    ABORT_UNEXPECTED_PDU,
    ABORT_UNRECOGNIZED_PDU,
    PC_ABSTRACT_NOT_SUPPORTED,
    PC_ACCEPT,
    PC_TS_NOT_SUPPORTED,
    PDU_TYPES,
    RJ_LOCAL_LIMIT,
    VERIFICATION,
    AssociateRefused,
    Message,
    ProtocolError,
    abort,
    associate_ac,
    associate_rj,
    command_ushort,
    decode_uid,
    p_data,
    parse_associate_rq,
    pdu,
    response_command,
)

if TYPE_CHECKING:
    from hub.imaging.callers import Caller

    from .receiver import DicomReceiver

log = logging.getLogger(__name__)

LINGER_SECONDS = 5.0
STOP_TIMEOUT = 10.0
BACKLOG = 128
ACCEPT_BACKOFF = 0.1  # seconds, after accept() failed (e.g. EMFILE) with the listener still open
PARK_AFTER = 2.0  # seconds of silence between messages before an association gives up its thread
SMALL_PDU = 1024  # the most an A-RELEASE-RQ/RP or A-ABORT (4 bytes of body) may claim
RQ_CHUNK = 16384  # an A-ASSOCIATE-RQ is read in pieces of at most this, as they arrive
# (the hub's own listener hands that to plugins.dicom.negotiator; TLS connections read it here)

C_STORE_RQ, C_ECHO_RQ, C_CANCEL_RQ = 0x0001, 0x0030, 0x0FFF
STATUS_UNRECOGNIZED_OPERATION = 0x0211
STATUS_SOP_CLASS_NOT_SUPPORTED = 0x0122
STATUS_MISSING_ELEMENT = 0xC000  # a failure of the "cannot understand" class
# C-STORE-RQ elements PS3.7 §9.3.1.1 requires (Command Field and Message ID are checked first)
STORE_REQUIRED = {0x00000002: "Affected SOP Class UID", 0x00000700: "Priority",
                  0x00001000: "Affected SOP Instance UID"}


class PduTooLong(ProtocolError):
    """A PDU or item longer than the negotiated or configured limit; the association is aborted."""
    def __init__(self, what: str, length: int, limit: int) -> None:
        super().__init__(f"{what} of {length} bytes, over {limit}", ABORT_INVALID_PARAMETER)


class ArtimExpired(TimeoutError):
    """The A-ASSOCIATE-RQ did not arrive whole within ``artim_timeout`` of the connect."""


class AssociationServer:
    """Accepts associations for a :class:`DicomReceiver`: a connection waits for its
    A-ASSOCIATE-RQ on the negotiation thread's selector, then has a thread of its own."""

    def __init__(self, receiver: DicomReceiver, supported: set[str], transfer_syntaxes: set[str]):
        from .limits import LimitEvents

        self.receiver = receiver
        self.supported = supported
        self.transfer_syntaxes = transfer_syntaxes
        self.active = 0  # accepted associations, counted against max_associations
        self.negotiating = 0  # connections still before their A-ASSOCIATE-AC
        self.limits = LimitEvents(receiver)
        self._lock = threading.Lock()
        self._conns: dict[socket.socket, threading.Thread] = {}
        self.negotiator: Negotiator | None = None
        # listener -> (its acceptor, whether this process owns it)
        self._listeners: dict[socket.socket, tuple[threading.Thread, bool]] = {}

    def start(self, host: str, port: int, *, tls: ssl.SSLContext | None = None) -> int:
        """Listen on ``host:port`` (0 picks a free port); returns the port."""
        listener = socket.create_server((host, port), backlog=BACKLOG, family=_family(host))
        return self.serve(listener, tls=tls)

    def serve(
        self, listener: socket.socket, *, owner: bool = True, tls: ssl.SSLContext | None = None
    ) -> int:
        """Accept on ``listener``, already listening; returns its port. With ``tls``, every
        connection is a TLS one (the handshake is part of its ARTIM deadline).

        A worker process (``owner=False``) shares the hub process's listener: every process
        blocks in accept() on it and the kernel wakes the one that has waited longest, so
        associations go round the processes in turn, and a connection waiting in the backlog
        is never lost with a process. Only the owner shuts it down when stopping, since a
        shutdown stops every process's accept()."""
        acceptor = threading.Thread(
            target=self._accept, args=(listener, tls), name="vethub-dicom-accept", daemon=True
        )
        with self._lock:
            if self.negotiator is None and tls is None:
                self.negotiator = Negotiator(self)
            self._listeners[listener] = (acceptor, owner)
        acceptor.start()
        return int(listener.getsockname()[1])

    def stop_accepting(self, timeout: float = STOP_TIMEOUT) -> None:
        """Blocking: accept no new association (the owner: in any process)."""
        with self._lock:
            listeners, self._listeners = self._listeners, {}
        for listener, (acceptor, owner) in listeners.items():
            if not owner:
                # A sharer's acceptor stays blocked in accept() until the owner shuts the
                # listener down (the hub stops accepting before it stops its workers) or the
                # process exits.
                continue
            _shutdown(listener)  # wakes the blocked accept()
            listener.close()
            acceptor.join(timeout)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Blocking: stop accepting, abort the associations in progress, wait for their threads."""
        deadline = time.monotonic() + timeout  # for all the threads together
        self.stop_accepting(timeout)
        negotiator, self.negotiator = self.negotiator, None
        if negotiator is not None:
            negotiator.stop()  # closes the connections still negotiating
        with self._lock:
            conns = dict(self._conns)
        for conn in conns:
            _shutdown(conn)  # wakes a blocked recv(); the thread sends nothing more
        for thread in conns.values():
            thread.join(max(0.0, deadline - time.monotonic()))

    def _accept(self, listener: socket.socket, tls: ssl.SSLContext | None) -> None:
        while True:
            try:
                conn, peer = listener.accept()
            except OSError as err:
                if listener not in self._listeners:  # stop() shut it down
                    return
                if err.errno == errno.EINVAL:  # not listening: the owner shut it down
                    return
                # Out of file descriptors or memory, or a connection reset before it was
                # accepted: keep listening, and give the process a moment to free some.
                log.warning("accepting a DICOM association failed: %s", err)
                time.sleep(ACCEPT_BACKOFF)
                continue
            if listener not in self._listeners:  # stopping: only a sharer gets here
                _send_quietly(conn, associate_rj(*RJ_BUSY))
                conn.close()
                return
            address = str(peer[0])
            with self._lock:
                crowded = self.negotiating >= self.receiver.config.max_negotiating
                if not crowded:
                    self.negotiating += 1
            if crowded:  # turned away without a thread, before reading anything
                self._refuse_crowded(conn, address)
                continue
            negotiator = self.negotiator
            if tls is None and negotiator is not None:
                negotiator.add(conn, address)  # a thread once its request is in
            else:
                self.spawn(conn, address, tls)  # TLS: the handshake in its own thread

    def spawn(
        self, conn: socket.socket, address: str, tls: ssl.SSLContext | None,
        body: bytearray | None = None, head: bytes | None = None,
    ) -> None:
        """Serve ``conn`` in a thread of its own; ``body``: its A-ASSOCIATE-RQ, complete,
        and/or ``head``: the PDU header already read (see :mod:`.negotiator`)."""
        thread = threading.Thread(
            target=self._serve, args=(conn, address, tls, body, head),
            name="vethub-dicom-assoc", daemon=True,
        )
        with self._lock:
            self._conns[conn] = thread
        thread.start()

    def negotiation_ended(self) -> None:
        """A connection closed before it became an association (it held no thread)."""
        with self._lock:
            self.negotiating -= 1

    def _refuse_crowded(self, conn: socket.socket, address: str) -> None:
        limit = self.receiver.config.max_negotiating
        self.limits.refused(
            "max_negotiating",
            f"{limit} connections from callers still negotiating; refused one from {address}",
            {"address": address, "limit": limit},
        )
        conn.setblocking(False)  # never wait on a peer we are turning away
        _send_quietly(conn, associate_rj(*RJ_LOCAL_LIMIT))
        conn.close()

    def resume(self, association: Association) -> None:
        """Serve a parked association again, in a new thread (its peer sent something)."""
        thread = threading.Thread(
            target=self._serve, args=(association.conn, association.address, None, None, None),
            kwargs={"parked": association}, name="vethub-dicom-assoc", daemon=True,
        )
        with self._lock:
            self._conns[association.conn] = thread
        thread.start()

    def association_ended(self) -> None:
        """A parked association closed by the negotiation thread (idle timeout, stop)."""
        with self._lock:
            self.active -= 1

    def _serve(
        self, conn: socket.socket, address: str, tls: ssl.SSLContext | None,
        body: bytearray | None, head: bytes | None, parked: Association | None = None,
    ) -> None:
        association: Association | None = parked
        handed_back = False  # parked: the negotiation thread has it until its peer sends
        try:
            if parked is not None:
                handed_back = parked.serve_messages()
            else:
                nodelay(conn)
                if tls is not None:
                    conn = self._handshake(conn, tls)
                association = Association(self, conn, address, tls is not None)
                handed_back = association.run(body, head)
        except ArtimExpired as err:
            # PS3.8 §9.2.3: ARTIM expiring while awaiting the request closes the connection.
            self.limits.refused(
                "artim", f"no complete A-ASSOCIATE-RQ from {address} within "
                f"{self.receiver.config.artim_timeout:g} s ({err})", {"address": address},
            )
        except PduTooLong as err:
            if association is None or not association.accepted_at:
                self.limits.refused(
                    "associate_rq_size", f"from {address}: {err}", {"address": address}
                )
            else:
                log.warning("association from %s aborted: %s", address, err)
            _send_quietly(conn, abort(2, err.reason))
        except ProtocolError as err:
            log.info("association from %s aborted: %s", address, err)
            _send_quietly(conn, abort(2, err.reason))
        except (ConnectionError, TimeoutError) as err:
            log.info("association from %s ended: %s", address, err or type(err).__name__)
            _send_quietly(conn, abort())
        except OSError as err:  # the socket failed (TLS handshake too), or the receiver stops
            log.info("association from %s ended: %s", address, err)
        except Exception:
            log.exception("association from %s failed", address)
            _send_quietly(conn, abort())
        finally:
            if not handed_back:
                self._ended(association, conn)

    def _ended(self, association: Association | None, conn: socket.socket) -> None:
        with self._lock:
            if association is not None and association.accepted_at:
                self.active -= 1
            else:
                self.negotiating -= 1
        _linger(conn, min(LINGER_SECONDS, self.receiver.config.artim_timeout))
        with self._lock:
            self._conns.pop(conn, None)
        conn.close()

    def _handshake(self, conn: socket.socket, tls: ssl.SSLContext) -> socket.socket:
        raw = conn
        conn.settimeout(self.receiver.config.artim_timeout)
        wrapped = tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        with self._lock:  # stop() must shut down the socket now in use
            thread = self._conns.pop(raw, None)
            if thread is not None:
                self._conns[wrapped] = thread
        wrapped.do_handshake()
        return wrapped

    def admit(self) -> bool:
        """Count a negotiated association against ``max_associations``, if there is room."""
        with self._lock:
            if self.active >= self.receiver.config.max_associations:
                return False
            self.active += 1
            self.negotiating -= 1
            return True


class Association:
    """One accepted (or negotiating) association of the hub's engine, served in its thread."""

    def __init__(
        self, server: AssociationServer, conn: socket.socket, address: str, tls: bool = False
    ) -> None:
        self.server = server
        self.tls = tls
        self.receiver = server.receiver
        self.config = server.receiver.config
        self.conn = conn
        self.address = address
        self.caller: Caller | None = None
        self.accepted: dict[int, tuple[str, str]] = {}  # context id -> (abstract, transfer)
        self.accepted_at = 0.0  # when the A-ASSOCIATE-AC went out (0: not accepted)
        self.peer_max = 0
        self._head = bytearray(6)
        self._waitall = 0  # MSG_WAITALL once the kernel keeps the timeouts (_idle_timeout)

    def run(self, body: bytearray | None = None, head: bytes | None = None) -> bool:
        """Negotiate, then serve messages; True when parked (see :meth:`serve_messages`).
        ``body``: the A-ASSOCIATE-RQ when it was read already; ``head``: its header."""
        if body is None:
            deadline = time.monotonic() + self.config.artim_timeout
            body = self._read_associate_rq(deadline, head)
        if not self._negotiate(body):
            return False
        self._idle_timeout(self.config.network_timeout)
        return self.serve_messages()

    def _idle_timeout(self, seconds: float) -> None:
        """From the A-ASSOCIATE-AC on: each read or write within ``seconds``. On plain TCP
        the kernel keeps the timeout (``SO_RCVTIMEO``/``SO_SNDTIMEO`` on a blocking socket)
        and a PDU's body is read with one ``MSG_WAITALL`` call: Python's own timeout polls
        before every call, and the body arrived in four or five. Each call gives up and
        retakes the GIL, which with fifty associations at once meant waiting for it a
        hundred times an instance (docs/performance.md). TLS keeps Python's timeout: the
        SSL layer takes no flags."""
        if self.tls:
            self.conn.settimeout(seconds)
            return
        whole, fraction = divmod(seconds, 1.0)
        timeval = struct.pack("@ll", int(whole), int(fraction * 1_000_000))
        self.conn.settimeout(None)
        self.conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        self.conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        self._waitall = socket.MSG_WAITALL

    def serve_messages(self) -> bool:
        """Read and answer messages until the association ends (False), or until the peer
        has been silent between two messages for :data:`PARK_AFTER` seconds: then the
        association is parked on the negotiation thread's selector without a thread, and
        resumed in a new one when its peer sends again (True)."""
        message = Message()
        max_pdu = self.config.max_pdu
        while True:
            if not message.command and self._park():
                return True
            kind, length = self._read_header()
            if kind == 0x04:
                if length > max_pdu:
                    raise PduTooLong("P-DATA-TF PDU", length, max_pdu)
                body = bytearray(length)
                self._fill(memoryview(body))
                if message.add(body, self.accepted):
                    self._dispatch(message)
                    message = Message()
                elif message.held >= STREAM_AFTER:
                    self._spill(message)
            elif kind == 0x05:
                self._small_body(length)
                self.conn.sendall(pdu(0x06, bytes(4)))
                return False
            elif kind == 0x07:
                self._small_body(length)
                return False
            elif kind in PDU_TYPES:
                raise ProtocolError(f"unexpected PDU type {kind:#x}", ABORT_UNEXPECTED_PDU)
            else:
                raise ProtocolError(f"unrecognised PDU type {kind:#x}", ABORT_UNRECOGNIZED_PDU)

    def _park(self) -> bool:
        """Between messages: wait up to PARK_AFTER for the next PDU (one poll, no timeout
        changes on the socket); hand the association to the negotiation thread if none came."""
        idle = self.config.network_timeout - PARK_AFTER
        negotiator = self.server.negotiator
        if self.tls or negotiator is None or idle <= 0:
            return False  # TLS may hold decrypted bytes poll() cannot see
        poller = select.poll()
        poller.register(self.conn, select.POLLIN | select.POLLPRI)
        if poller.poll(PARK_AFTER * 1000):
            return False
        negotiator.park(self, time.monotonic() + idle)
        return True

    # --- reading -------------------------------------------------------------------------------

    def _read_header(self, deadline: float | None = None) -> tuple[int, int]:
        self._fill(memoryview(self._head), deadline)
        kind, _, length = struct.unpack(">BBI", self._head)
        return kind, length

    def _read_associate_rq(self, deadline: float, head: bytes | None = None) -> bytearray:
        """The A-ASSOCIATE-RQ's body, read within ``deadline`` into a buffer that grows only
        as its bytes arrive (a header alone claims nothing). ``head``: its header, if read."""
        if head is None:
            kind, length = self._read_header(deadline)
        else:
            kind, _, length = struct.unpack(">BBI", head)
        if kind != 0x01:
            if kind in PDU_TYPES:
                raise ProtocolError(f"expected A-ASSOCIATE-RQ, got PDU type {kind:#x}",
                                    ABORT_UNEXPECTED_PDU)
            raise ProtocolError(f"unrecognised PDU type {kind:#x}", ABORT_UNRECOGNIZED_PDU)
        if length > self.config.max_associate_rq:
            raise PduTooLong("A-ASSOCIATE-RQ", length, self.config.max_associate_rq)
        body = bytearray()
        while len(body) < length:
            chunk = bytearray(min(RQ_CHUNK, length - len(body)))
            self._fill(memoryview(chunk), deadline)
            body += chunk
        return body

    def _small_body(self, length: int) -> None:
        if length > SMALL_PDU:
            raise PduTooLong("release/abort PDU", length, SMALL_PDU)
        self._fill(memoryview(bytearray(length)))

    def _fill(self, view: memoryview, deadline: float | None = None) -> None:
        """Receive exactly ``len(view)`` bytes into ``view``, in as few calls as the socket
        allows; by ``deadline`` (a monotonic time) when given, else each call within the
        socket's timeout."""
        recv_into, got, want = self.conn.recv_into, 0, len(view)
        flags = 0 if deadline is not None else self._waitall
        while got < want:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ArtimExpired(f"{got} of {want} bytes")
                self.conn.settimeout(left)
            try:
                n = recv_into(view[got:], 0, flags)
            except TimeoutError as err:
                if deadline is not None:
                    raise ArtimExpired(f"{got} of {want} bytes") from err
                raise
            except BlockingIOError as err:  # SO_RCVTIMEO expired (_idle_timeout)
                raise TimeoutError(f"nothing received for {self.config.network_timeout:g} s, "
                                   f"{got} of {want} bytes") from err
            if not n:
                raise ConnectionError("the peer closed the connection")
            got += n

    # --- association negotiation ---------------------------------------------------------------

    def _negotiate(self, body: bytearray) -> bool:
        try:
            rq = parse_associate_rq(bytes(body))
        except AssociateRefused as err:
            self._reject(Rejection(err.rsd, f"from {self.address}: {err}",
                                   {"address": self.address, "reason": "protocol"}))
            return False
        config = self.config
        verdict = self.receiver.acceptance.decide(rq.calling_ae, rq.called_ae, self.address)
        if isinstance(verdict, Rejection):
            self._reject(verdict)
            return False
        data = {"calling_ae": rq.calling_ae, "called_ae": rq.called_ae, "address": self.address}
        if not self.server.admit():
            self.server.limits.refused(
                "max_associations",
                f"{config.max_associations} associations in progress; refused calling AE "
                f"{rq.calling_ae} from {self.address}", {**data, "limit": config.max_associations},
            )
            self.conn.sendall(associate_rj(*RJ_LOCAL_LIMIT))
            return False
        self.accepted_at = time.monotonic()
        self.caller = verdict
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

    def _reject(self, rejection: Rejection) -> None:
        self.receiver.acceptance.reject(rejection)  # recorded and logged first
        self.conn.sendall(associate_rj(*rejection.rsd))

    # --- DIMSE ---------------------------------------------------------------------------------

    def _spill(self, message: Message) -> None:
        """Write what a large data set has brought so far (see :mod:`.streaming`)."""
        parts, message.parts, message.held = message.parts, [], 0
        sink = message.sink
        if sink is None:
            message.sink = self._open_stream(message, parts)
        elif isinstance(sink, StreamedInstance):
            sink.write(parts)
        # else a refusal: what arrives is dropped until the data set ends

    def _open_stream(self, message: Message, parts: list[memoryview]) -> object:
        cmd = message.cmd
        if command_ushort(cmd, 0x00000100) != C_STORE_RQ or self._store_problem(message):
            return False  # answered when complete, from the command alone
        assert self.caller is not None
        return StreamedInstance.open(
            self.receiver, self.caller, decode_uid(cmd[0x00000002]),
            decode_uid(cmd[0x00001000]), self.accepted[message.context_id][1], parts,
        )

    def _dispatch(self, message: Message) -> None:
        cmd = message.cmd
        field_ = command_ushort(cmd, 0x00000100)
        msg_id = command_ushort(cmd, 0x00000110)
        if field_ is None or msg_id is None:
            # Without them there is nothing a response could refer to (PS3.7 §9.3).
            raise ProtocolError("command without Command Field or Message ID",
                                ABORT_INVALID_PARAMETER)
        sop_class = decode_uid(cmd.get(0x00000002, b"") or cmd.get(0x00000003, b""))
        if field_ == C_ECHO_RQ:
            rsp = response_command(0x8030, msg_id, sop_class or VERIFICATION, None, 0x0000)
        elif field_ == C_STORE_RQ:
            sop_instance = decode_uid(cmd.get(0x00001000, b""))
            status, comment = self._store(sop_class, sop_instance, message)
            rsp = response_command(0x8001, msg_id, sop_class, sop_instance, status, comment)
        elif field_ == C_CANCEL_RQ or field_ & 0x8000:
            log.info("DIMSE %#06x from %s ignored", field_, self.address)
            return  # a cancel, or a response: nothing to answer
        else:
            log.info("DIMSE %#06x from %s not supported: 0x0211", field_, self.address)
            rsp = response_command(field_ | 0x8000, msg_id, sop_class, None,
                                   STATUS_UNRECOGNIZED_OPERATION, "operation not supported")
        self.conn.sendall(p_data(message.context_id, rsp, self.peer_max))

    def _store_problem(self, message: Message) -> tuple[int, str] | None:
        missing = [name for tag, name in STORE_REQUIRED.items() if not message.cmd.get(tag)]
        if missing:
            return STATUS_MISSING_ELEMENT, f"C-STORE-RQ lacks {', '.join(missing)}"
        if not message.has_data:
            return STATUS_MISSING_ELEMENT, "C-STORE-RQ without a data set"
        abstract = self.accepted[message.context_id][0]
        if decode_uid(message.cmd[0x00000002]) != abstract:
            return STATUS_SOP_CLASS_NOT_SUPPORTED, "SOP class differs from the context's"
        return None

    def _store(self, sop_class: str, sop_instance: str, message: Message) -> tuple[int, str | None]:
        assert self.caller is not None
        problem = self._store_problem(message)
        if problem is not None:
            log.info("C-STORE from %s refused: %s", self.address, problem[1])
            return problem
        sink = message.sink
        try:
            if isinstance(sink, StreamedInstance):
                sink.write(message.parts)
                status = sink.finish()
            elif sink is not None and sink is not False:
                status = sink  # the header's refusal, decided when streaming began
            else:
                transfer_syntax = self.accepted[message.context_id][1]
                status = self.receiver.receive_instance(
                    self.caller, sop_class, sop_instance, transfer_syntax, message.parts
                )
        except Exception as err:  # never let one instance take the association down
            log.exception("C-STORE failed unexpectedly")
            if isinstance(sink, StreamedInstance):
                sink.close()
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
    except (OSError, ValueError):
        pass


def _linger(conn: socket.socket, seconds: float) -> None:
    """Let the peer close first (PS3.8 ARTIM): after an A-ASSOCIATE-RJ, A-RELEASE-RP or
    A-ABORT the requestor closes the connection. Closing at once can reset it before the peer
    has read our last PDU, which it then sees as an abort. Whatever it still sends is dropped."""
    deadline = time.monotonic() + seconds
    try:
        while (left := deadline - time.monotonic()) > 0:
            conn.settimeout(left)
            if not conn.recv(65536):
                return
    except (OSError, ValueError):  # timed out, reset, or shut down by stop()
        pass

