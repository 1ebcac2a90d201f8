"""pynetdicom with TCP_NODELAY on both ends.

pynetdicom sends a C-STORE as two PDUs (command, then data set). With Nagle's algorithm on,
the second small write waits for the peer's delayed ACK of the first: ~40 ms per instance,
whatever its size (PERFORMANCE.md, "Nagle"). Both the receiver's accepted sockets and the
forwarder's outgoing ones disable it.
"""

from __future__ import annotations

import socket
from typing import Any

from pynetdicom import AE
from pynetdicom.transport import ThreadedAssociationServer


def nodelay(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:  # not TCP (a test double) or already closed
        pass


class NoDelayAE(AE):
    """An AE whose outgoing association sockets have TCP_NODELAY set."""

    def _create_socket(self, assoc: Any, address: Any, tls_args: Any) -> Any:
        sock = super()._create_socket(assoc, address, tls_args)
        if sock.socket is not None:
            nodelay(sock.socket)
        return sock


class NoDelayServer(ThreadedAssociationServer):
    """An association server whose accepted sockets have TCP_NODELAY set."""

    def get_request(self) -> tuple[socket.socket, Any]:
        client, address = super().get_request()
        nodelay(client)
        return client, address


class ReusePortServer(NoDelayServer):
    """Also SO_REUSEPORT, so several receiver processes can share one port."""

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()
