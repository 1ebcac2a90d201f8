"""pynetdicom with TCP_NODELAY on both ends.

pynetdicom sends a C-STORE as two PDUs (command, then data set). With Nagle's algorithm on,
the second small write waits for the peer's delayed ACK of the first: ~40 ms per instance,
whatever its size (docs/dicom.md and docs/performance.md, on Nagle). Both the receiver's accepted sockets and the
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


class NoDelayAE(AE):
    """An AE whose outgoing association sockets have TCP_NODELAY and a heartbeat set."""

    def _create_socket(self, assoc: Any, address: Any, tls_args: Any) -> Any:
        sock = super()._create_socket(assoc, address, tls_args)
        if sock.socket is not None:
            nodelay(sock.socket)
            heartbeat(sock.socket)
        return sock


class NoDelayServer(ThreadedAssociationServer):
    """An association server whose accepted sockets have TCP_NODELAY set."""

    def get_request(self) -> tuple[socket.socket, Any]:
        client, address = super().get_request()
        nodelay(client)
        return client, address


def _keep_stolen_responses() -> None:
    """Work around a race in pynetdicom's requestor (seen as a lost C-STORE response).

    ``send_c_store`` pauses the association's reactor thread by clearing a checkpoint and
    spinning until ``_is_paused`` is true; but the reactor sets ``_is_paused`` just *before*
    its checkpoint wait, so on a loaded machine it can be past that wait, take the peer's
    C-STORE-RSP off the queue meant for ``send_c_store`` and drop it as "unexpected", leaving
    the sender waiting until its timeout. For requestors, put such a response back instead.
    """
    from pynetdicom.association import Association

    if getattr(Association, "_vethub_keeps_responses", False):
        return
    original = Association._serve_request

    def _serve_request(self: Any, msg: Any, context_id: int) -> None:
        if self.is_requestor and not msg.is_valid_request and msg.is_valid_response:
            self.dimse.msg_queue.put((context_id, msg))
            return
        original(self, msg, context_id)

    Association._serve_request = _serve_request  # type: ignore[method-assign]
    Association._vethub_keeps_responses = True  # type: ignore[attr-defined]


_keep_stolen_responses()
