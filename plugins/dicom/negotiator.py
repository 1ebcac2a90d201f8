"""Connections waiting for their A-ASSOCIATE-RQ, and accepted associations silent between
messages, on one selector thread instead of a thread each.

A connection costs a thread only once it has sent a complete A-ASSOCIATE-RQ: until then it is
a non-blocking socket registered with this thread's selector, and a buffer that grows as the
request's bytes arrive (at most ``max_associate_rq``). So a thousand connections that never
send a byte cost a thousand descriptors and nothing else, and the modality that does send is
handed to its association thread as soon as its request is in. The ARTIM deadline
(``artim_timeout`` from the connect, PS3.8 §9.1.5) is kept here: an expired connection is
closed, as the standard says.

An accepted association whose peer has been silent between two messages for a moment is
*parked* here too (``Association.serve_messages``): a new thread takes it up when its peer
sends again, and an idle one is aborted at its ``network_timeout``.

Only the request's arrival and the wait between messages are handled here. Whatever needs an answer (a request too long, a
PDU that is not a request) goes to a thread like any association, which answers and lingers;
the data phase, where the speed is, never passes through this thread.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .association import Association, AssociationServer

log = logging.getLogger(__name__)

RQ_CHUNK = 16384
ABORT = bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 2, 0])  # A-ABORT, service provider, no reason


@dataclass(eq=False)
class Pending:
    """A connection whose A-ASSOCIATE-RQ is still arriving: its deadline and bytes so far."""
    conn: socket.socket
    address: str
    deadline: float
    head: bytearray = field(default_factory=bytearray)
    body: bytearray = field(default_factory=bytearray)
    length: int = -1  # the request's length, once its header is in


@dataclass(eq=False)
class Parked:
    """An accepted association silent between messages (``Association.serve_messages``)."""

    association: Association
    deadline: float  # its idle timeout

    @property
    def conn(self) -> socket.socket:
        return self.association.conn

    @property
    def address(self) -> str:
        return self.association.address


class Negotiator:
    """Waits on one selector for connections' A-ASSOCIATE-RQs and idle associations' next PDU."""
    def __init__(self, server: AssociationServer) -> None:
        self.server = server
        self.config = server.receiver.config
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._incoming: list[Pending | Parked] = []
        self._deadlines: list[tuple[float, int, Pending | Parked]] = []
        self._pending: set[Pending | Parked] = set()
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="vethub-dicom-negotiate",
                                        daemon=True)
        self._thread.start()

    def add(self, conn: socket.socket, address: str) -> None:
        """Take a freshly accepted connection (already counted as negotiating)."""
        conn.setblocking(False)
        pending = Pending(conn, address, time.monotonic() + self.config.artim_timeout)
        with self._lock:
            self._incoming.append(pending)
        self._wake()

    def park(self, association: Association, deadline: float) -> None:
        """Hold an accepted association without a thread until its peer sends (then
        :meth:`AssociationServer.resume`) or ``deadline`` passes (then an A-ABORT)."""
        with self._lock:
            self._incoming.append(Parked(association, deadline))
        self._wake()

    def stop(self) -> None:
        """Close every connection still negotiating; end the thread."""
        self._stopping = True
        self._wake()
        self._thread.join(10)

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # a wake-up is already pending, or stopping

    def _run(self) -> None:
        try:
            while not self._stopping:
                self._take_incoming()
                timeout = None
                if self._deadlines:
                    timeout = max(0.0, self._deadlines[0][0] - time.monotonic())
                for key, _ in self._selector.select(timeout):
                    if key.data is None:
                        self._drain_wake()
                        continue
                    try:
                        self._readable(key.data)
                    except Exception:  # one connection's trouble must not stop the others'
                        log.exception("negotiating with %s failed", key.data.address)
                        if key.data in self._pending:
                            self._drop(key.data)
                self._expire()
        except Exception:
            log.exception("the DICOM negotiation thread failed")
        finally:
            for pending in list(self._pending):
                self._drop(pending)
            self._selector.close()
            self._wake_r.close()
            self._wake_w.close()

    def _take_incoming(self) -> None:
        with self._lock:
            incoming, self._incoming = self._incoming, []
        for pending in incoming:
            self._pending.add(pending)
            self._selector.register(pending.conn, selectors.EVENT_READ, pending)
            heapq.heappush(self._deadlines, (pending.deadline, next(self._order), pending))

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _readable(self, pending: Pending | Parked) -> None:
        if isinstance(pending, Parked):
            self._forget(pending)
            self.server.resume(pending.association)
            return
        try:
            if pending.length < 0:
                chunk = pending.conn.recv(6 - len(pending.head))
            else:
                chunk = pending.conn.recv(min(RQ_CHUNK, pending.length - len(pending.body)))
        except BlockingIOError:
            return
        except OSError:
            self._drop(pending)
            return
        if not chunk:
            self._drop(pending)  # the peer closed before its request was in
            return
        if pending.length < 0:
            pending.head += chunk
            if len(pending.head) < 6:
                return
            kind, _, length = struct.unpack(">BBI", pending.head)
            if kind != 0x01 or length > self.config.max_associate_rq:
                self._hand_over(pending, None)  # its thread reads the header again and answers
                return
            pending.length = length
        else:
            pending.body += chunk
        if len(pending.body) == pending.length:
            self._hand_over(pending, pending.body)

    def _hand_over(self, pending: Pending, body: bytearray | None) -> None:
        self._forget(pending)
        # Blocking again, within what is left of ARTIM until the association is accepted.
        pending.conn.settimeout(max(0.1, pending.deadline - time.monotonic()))
        head, pending.head, pending.body = bytes(pending.head), bytearray(), bytearray()
        self.server.spawn(pending.conn, pending.address, None, body, head)

    def _expire(self) -> None:
        now = time.monotonic()
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, pending = heapq.heappop(self._deadlines)
            if pending not in self._pending:
                continue  # handed over or closed already
            if isinstance(pending, Parked):
                log.info("association from %s ended: idle for %g s", pending.address,
                         self.config.network_timeout)
                self._drop(pending, abort=True)
                continue
            got = len(pending.head) + len(pending.body)
            self.server.limits.refused(
                "artim", f"no complete A-ASSOCIATE-RQ from {pending.address} within "
                f"{self.config.artim_timeout:g} s ({got} bytes)", {"address": pending.address},
            )
            self._drop(pending)

    def _forget(self, pending: Pending | Parked) -> None:
        self._pending.discard(pending)
        try:
            self._selector.unregister(pending.conn)
        except (KeyError, ValueError):
            pass

    def _drop(self, pending: Pending | Parked, *, abort: bool = False) -> None:
        """Close a connection that never became an association, or a parked one (with an
        A-ABORT for its idle timeout)."""
        self._forget(pending)
        if isinstance(pending, Parked):
            if abort:
                try:
                    pending.conn.setblocking(False)
                    pending.conn.send(ABORT)
                except OSError:
                    pass
            pending.conn.close()
            self.server.association_ended()
            return
        pending.conn.close()
        self.server.negotiation_ended()
