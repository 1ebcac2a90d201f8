"""``free_port`` keeps its port for the test, yet a SO_REUSEADDR server can listen on it."""

from __future__ import annotations

import errno
import socket

import pytest


def test_the_port_is_kept_until_the_server_takes_it(free_port: int) -> None:
    # Nobody who does not ask to share it gets the port meanwhile.
    with socket.socket() as other, pytest.raises(OSError) as info:
        other.bind(("127.0.0.1", free_port))
    assert info.value.errno == errno.EADDRINUSE

    # The server (SO_REUSEADDR, as the hub's receivers set it) listens on it, twice over, as
    # a restarted `vethub run` does.
    for _ in range(2):
        with socket.create_server(("127.0.0.1", free_port)) as server:
            with socket.create_connection(("127.0.0.1", free_port), timeout=5) as client:
                conn, _ = server.accept()
                with conn:
                    client.sendall(b"ping")
                    assert conn.recv(4) == b"ping"
