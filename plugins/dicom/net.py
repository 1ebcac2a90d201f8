"""pynetdicom with TCP_NODELAY on both ends.

pynetdicom sends a C-STORE as two PDUs (command, then data set). With Nagle's algorithm on,
the second small write waits for the peer's delayed ACK of the first: ~40 ms per instance,
whatever its size (docs/dicom.md and docs/performance.md, on Nagle). Both the receiver's accepted sockets and the
forwarder's outgoing ones disable it (the outgoing ones through
:class:`plugins.dicom.pynetdicom_shim.NoDelayAE`).
"""

from __future__ import annotations

import socket
from typing import Any

from pynetdicom.transport import ThreadedAssociationServer


def nodelay(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:  # not TCP (a test double) or already closed
        pass


def heartbeat(sock: socket.socket) -> None:
    """TCP keepalive every few seconds, and a bound on unacknowledged data: a peer whose host
    vanished mid-association (no FIN, no RST) fails the socket in about 15 s instead of
    leaving the sender waiting for a response until its full timeout."""
    options = [
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPIDLE", None), 5),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", None), 2),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", None), 3),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_USER_TIMEOUT", None), 15000),
    ]
    for level, option, value in options:
        if option is None:
            continue
        try:
            sock.setsockopt(level, option, value)
        except OSError:
            pass


class NoDelayServer(ThreadedAssociationServer):
    """An association server whose accepted sockets have TCP_NODELAY set."""

    def get_request(self) -> tuple[socket.socket, Any]:
        client, address = super().get_request()
        nodelay(client)
        return client, address

