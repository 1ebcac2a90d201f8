"""Rows from the extra receiver processes, committed by the hub process's one committer.

With ``[dicom] processes = N`` the N-1 worker processes (:mod:`plugins.dicom.worker`) receive
associations and write each instance's file durably themselves, then send its row here over a
Unix socket and wait for the answer before they say Success. The hub process files those rows
with its own :class:`~plugins.dicom.committer.Committer`, beside its own associations' rows:

- on SQLite, two committing processes only wait on each other's write lock (a second process
  that committed its own rows was slower than one, docs/performance.md), while one committer
  has the database to itself;
- associations in every process share one group commit;
- ``vethub_instance_stored`` fires in the hub process, where the other plugins run.

Each instance in flight in a worker has a connection of its own (pooled in the worker),
served by a thread of its own here, so one slow commit holds up only its own association. A message is a 4-byte big-endian
length and a ``marshal``-encoded tuple of plain values (never pickle: nothing from the socket
is ever executed). The socket lives in a directory only the hub's user can enter.
"""

from __future__ import annotations

import logging
import marshal
import os
import shutil
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import fields
from operator import attrgetter
from pathlib import Path

from hub.imaging.filing import ImagingError, StoreOutcome
from hub.imaging.service import ReceivedInstance

from .committer import SUBMIT_TIMEOUT, Committer

log = logging.getLogger(__name__)

_LENGTH = struct.Struct("!I")
ACCEPT_BACKOFF = 0.1  # seconds
MAX_MESSAGE = 1 << 20  # a row is a few hundred bytes; anything longer is not from a worker


# A row on the wire: ReceivedInstance's fields in order, all str, int or None.
_row = attrgetter(*(f.name for f in fields(ReceivedInstance)))


class RelayError(RuntimeError):
    """The hub process did not answer: the instance's row is not known to be committed."""


def _send(sock: socket.socket, message: tuple) -> None:
    payload = marshal.dumps(message)
    sock.sendall(_LENGTH.pack(len(payload)) + payload)


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            return None  # the peer closed the connection
        got += n
    return bytes(buffer)


def _recv(sock: socket.socket) -> tuple | None:
    head = _recv_exact(sock, _LENGTH.size)
    if head is None:
        return None
    (length,) = _LENGTH.unpack(head)
    if length > MAX_MESSAGE:
        raise RelayError(f"a message of {length} bytes")
    payload = _recv_exact(sock, length)
    if payload is None:
        return None
    message = marshal.loads(payload)
    if not isinstance(message, tuple):
        raise RelayError(f"a message that is a {type(message).__name__}, not a tuple")
    return message


# --- the hub process's side ----------------------------------------------------------------------


class RelayServer:
    """Listens on a Unix socket in a private directory; files each row it is sent."""

    def __init__(self, committer: Committer) -> None:
        self.committer = committer
        self._dir: Path | None = None
        self._listener: socket.socket | None = None
        self._threads: set[threading.Thread] = set()
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.rows = 0  # filed for the workers, refused ones included

    @property
    def path(self) -> Path:
        assert self._dir is not None, "the relay is not started"
        return self._dir / "commit.sock"

    def start(self) -> Path:
        """Listen; returns the socket's path, for the workers."""
        self._dir = Path(tempfile.mkdtemp(prefix="vethub-relay-"))  # mode 0700
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.path))
        listener.listen(64)
        self._listener = listener
        self._spawn(self._accept, listener, "vethub-dicom-relay")
        return self.path

    def stop(self, timeout: float = 10.0) -> None:
        """Blocking: stop listening, close every connection, wait for the threads."""
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
            except OSError:
                pass
            listener.close()
        with self._lock:
            connections, threads = list(self._connections), list(self._threads)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in threads:
            thread.join(timeout)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _spawn(self, target: Callable[[socket.socket], None], arg: socket.socket, name: str) -> None:
        thread = threading.Thread(target=target, args=(arg,), name=name, daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def _accept(self, listener: socket.socket) -> None:
        try:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError as err:
                    if self._listener is not listener:
                        return  # stop() closed it
                    # Out of file descriptors, say: a worker's connection waits in the
                    # backlog meanwhile, so keep listening after a moment.
                    log.warning("accepting a relay connection failed: %s", err)
                    time.sleep(ACCEPT_BACKOFF)
                    continue
                with self._lock:
                    self._connections.add(conn)
                self._spawn(self._serve, conn, "vethub-dicom-relay-conn")
        finally:
            self._forget()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                while (request := _recv(conn)) is not None:
                    _send(conn, self._file(request))
        except (OSError, RelayError, ValueError, EOFError) as err:
            log.warning("relay connection from a receiver process ended: %r", err)
        finally:
            with self._lock:
                self._connections.discard(conn)
            self._forget()

    def _forget(self) -> None:
        with self._lock:
            self._threads.discard(threading.current_thread())

    def _file(self, request: tuple) -> tuple:
        """One row, as the committer files it; the answer says how it went."""
        try:
            item = ReceivedInstance(*request)
        except TypeError as err:
            return ("error", "RelayError", f"not a row: {err}")
        with self._lock:
            self.rows += 1
        try:
            outcome = self.committer.submit(item)
        except ImagingError as err:
            return ("imaging", err.status, str(err))
        except Exception as err:  # the worker answers 0xA700; the instance is not filed
            return ("error", type(err).__name__, str(err))
        return ("ok", outcome.instance_id, outcome.study_id, outcome.created)


# --- a worker process's side ---------------------------------------------------------------------


class RelayCommitter:
    """What a worker's receiver has instead of a Committer: ``submit`` sends the row to the
    hub process and returns once it is committed there (or raises as the committer did).

    Connections are pooled, not kept per thread: an association's thread ends with it, and a
    pool holds only as many connections as instances were ever in flight at once."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        self._idle: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stopped = False

    def start(self, loop: object = None) -> None:
        self._stopped = False

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def submit(self, item: ReceivedInstance, timeout: float = SUBMIT_TIMEOUT + 10) -> StoreOutcome:
        """Blocking: the row's outcome. Waits a little longer than the hub's committer does,
        so that its own timeout, not this one, decides."""
        conn = self._take()
        try:
            conn.settimeout(timeout)
            _send(conn, _row(item))
            answer = _recv(conn)
        except (OSError, RelayError, ValueError, EOFError) as err:
            conn.close()  # its state is unknown: the next instance connects afresh
            raise RelayError(f"the hub process did not answer: {err!r}") from err
        if answer is None:
            conn.close()
            raise RelayError("the hub process closed the connection")
        self._give_back(conn)
        match answer:
            case ("ok", instance_id, study_id, created):
                return StoreOutcome(instance_id, study_id, created)
            case ("imaging", status, message):
                raise ImagingError(message, status)
            case (_, kind, message):
                raise RelayError(f"{kind}: {message}")
        raise RelayError(f"an answer the relay does not know: {answer!r}")

    def _take(self) -> socket.socket:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(self.path)
        except OSError as err:
            conn.close()
            raise RelayError(f"cannot reach the hub process at {self.path}: {err}") from err
        return conn

    def _give_back(self, conn: socket.socket) -> None:
        with self._lock:
            if not self._stopped:
                self._idle.append(conn)
                return
        conn.close()
