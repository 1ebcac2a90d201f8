"""Reading upper-layer PDUs straight into their own buffers (an asyncio BufferedProtocol).

A StreamReader made two coroutine hand-offs and several copies per PDU (into its buffer, out
of it on readexactly, the remainder moved down); at 100+ MB/s that was a large share of the
receiver's event-loop time. Here a large remainder of a PDU body is read straight into that
body, anything else (headers, short PDUs, the start of the next body) through one staging
buffer in reads as large as the socket has, and complete PDUs wait in a queue, so an
association that is behind takes the next PDU without suspending.
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from collections.abc import Callable

MAX_PDU = 64 * 1024 * 1024  # refuse a PDU longer than this (PS3.8 allows 4 GiB; nobody sends it)
QUEUE_HIGH = 8  # PDUs queued before the socket is paused
STAGE = 256 * 1024  # staging buffer; a body remainder at least DIRECT long is read in place
DIRECT = 64 * 1024


class ProtocolError(Exception):
    """The peer broke the protocol; the association is aborted."""


class PduTooLong(ProtocolError):
    def __init__(self, length: int) -> None:
        super().__init__(f"PDU of {length} bytes")


class PduReader(asyncio.BufferedProtocol):
    """One connection: complete PDUs as ``(type, body)``; writes go to the transport."""

    def __init__(self, on_connection: Callable[[PduReader], object]) -> None:
        self._on_connection = on_connection
        self.transport: asyncio.Transport | None = None
        self._head = bytearray(6)
        self._body: bytearray | None = None  # None while the 6-byte header is being read
        self._filled = 0  # bytes of the header, or of the body, received so far
        self._stage = memoryview(bytearray(STAGE))
        self._direct = False
        self._kind = 0
        self._ready: deque[tuple[int, bytearray]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._paused = False
        self.closed = asyncio.get_running_loop().create_future()

    # --- protocol callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._on_connection(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        body = self._body
        if body is not None and len(body) - self._filled >= DIRECT:
            self._direct = True
            return memoryview(body)[self._filled :]
        self._direct = False
        return self._stage

    def buffer_updated(self, nbytes: int) -> None:
        if self._direct:
            assert self._body is not None
            self._filled += nbytes
            if self._filled == len(self._body):
                self._complete()
            return
        data, pos = self._stage[:nbytes], 0
        while pos < nbytes and self._error is None:
            if self._body is None:
                take = min(6 - self._filled, nbytes - pos)
                self._head[self._filled : self._filled + take] = data[pos : pos + take]
                self._filled += take
                pos += take
                if self._filled == 6:
                    self._start_body()
                continue
            take = min(len(self._body) - self._filled, nbytes - pos)
            self._body[self._filled : self._filled + take] = data[pos : pos + take]
            self._filled += take
            pos += take
            if self._filled == len(self._body):
                self._complete()

    def eof_received(self) -> bool:
        self._fail(asyncio.IncompleteReadError(b"", None))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("connection closed"))
        if not self.closed.done():
            self.closed.set_result(None)

    def _start_body(self) -> None:
        self._kind, _, length = struct.unpack(">BBI", self._head)
        if length > MAX_PDU:
            self._fail(PduTooLong(length))
            return
        self._body, self._filled = bytearray(length), 0
        if not length:
            self._complete()

    def _complete(self) -> None:
        assert self._body is not None
        self._ready.append((self._kind, self._body))
        self._body, self._filled = None, 0
        if len(self._ready) >= QUEUE_HIGH and self.transport is not None and not self._paused:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    # --- for the association ----------------------------------------------------------------

    async def read_pdu(self) -> tuple[int, bytearray]:
        while not self._ready:
            if self._error is not None:
                raise self._error
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        pdu = self._ready.popleft()
        if self._paused and len(self._ready) < QUEUE_HIGH // 2 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return pdu

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def linger(self, seconds: float) -> None:
        """Wait up to ``seconds`` for the peer to close the connection (reading nothing more)."""
        self._ready.clear()
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        try:
            async with asyncio.timeout(seconds):
                await asyncio.shield(self.closed)
        except TimeoutError:
            pass

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        if isinstance(exc, PduTooLong) and self.transport is not None:
            self.transport.pause_reading()  # nothing more is read; the association aborts
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
