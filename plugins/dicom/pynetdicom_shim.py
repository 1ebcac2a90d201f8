"""Everything the hub does with pynetdicom's private parts, in one place.

pynetdicom offers no public way to do the four things below; each is needed, and each is the
first thing to check when pynetdicom is upgraded (its tests: ``tests/hub/testing/
test_dicom_peer.py``, ``tests/plugins/dicom/test_dicom_forward*.py``, and the receiver's tests
on ``engine = "pynetdicom"``). Nothing else in the hub touches a private name of pynetdicom's.

- :func:`start_server`: ``AE.start_server`` takes no server class, and the receiver's and the
  test kit's need one (:class:`plugins.dicom.net.NoDelayServer`). ``AE.make_server`` does take
  one, but a server it made is not in ``ae._servers``, and ``ThreadedAssociationServer.
  shutdown()`` removes itself from that list (a ValueError if absent).
- :class:`NoDelayAE`: the outgoing association's socket is made in ``AE._create_socket``, the
  only place to set TCP_NODELAY and the keepalive on it before it connects.
- :func:`send_files_as_stored`: ``_config.STORE_SEND_CHUNKED_DATASET`` is pynetdicom's only
  switch for sending a file's data set as stored instead of decoding and re-encoding it. It is
  process-wide; it changes only ``send_c_store`` given a path, which only the forwarder and
  the test kit do, and both want it.
- :func:`_keep_stolen_responses`: a race in pynetdicom's requestor loses a C-STORE response;
  the fix replaces ``Association._serve_request`` (applied once, when this module is imported,
  since it is a fix to the class).
"""

from __future__ import annotations

import threading
from typing import Any

from pynetdicom import AE, _config
from pynetdicom.events import EventHandlerType
from pynetdicom.transport import ThreadedAssociationServer

from .net import heartbeat, nodelay


def start_server(
    ae: AE,
    address: tuple[str, int],
    handlers: list[EventHandlerType],
    server_class: type[ThreadedAssociationServer],
    *,
    name: str = "vethub-dicom-acceptor",
) -> ThreadedAssociationServer:
    """``ae.start_server(block=False)``, with a chosen server class."""
    server = ae.make_server(address, evt_handlers=handlers, server_class=server_class)
    thread = threading.Thread(target=server.serve_forever, name=name)
    thread.daemon = True
    thread.start()
    ae._servers.append(server)  # its shutdown() removes it from there
    return server


class NoDelayAE(AE):
    """An AE whose outgoing association sockets have TCP_NODELAY and a heartbeat set
    (:mod:`plugins.dicom.net` says why)."""

    def _create_socket(self, assoc: Any, address: Any, tls_args: Any) -> Any:
        sock = super()._create_socket(assoc, address, tls_args)
        if sock.socket is not None:
            nodelay(sock.socket)
            heartbeat(sock.socket)
        return sock


def send_files_as_stored() -> None:
    """Make ``send_c_store(path)`` send the file's data set as stored (chunked from the file,
    never decoded); call it before sending files. Process-wide, and idempotent."""
    _config.STORE_SEND_CHUNKED_DATASET = True


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
