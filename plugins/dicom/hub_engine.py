"""The hub's own upper-layer engine (``[dicom] engine = "hub"``, the default).

The associations themselves are :mod:`plugins.dicom.association`'s (one thread each, once the
caller's A-ASSOCIATE-RQ is in; :mod:`plugins.dicom.negotiator` until then); this is the
:class:`~plugins.dicom.engine.AssociationEngine` face of them: the plain port, or a listener
shared with the other receiver processes, and the TLS port (the hub process's only).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import TYPE_CHECKING

from .association import AssociationServer
from .config import DicomConfig
from .engine import SOP_CLASSES, TRANSFER_SYNTAXES

if TYPE_CHECKING:
    from .receiver import DicomReceiver



class HubEngine:
    """The hub's upper layer as a receiver's engine; ``server`` holds its associations."""

    def __init__(self, receiver: DicomReceiver) -> None:
        self.receiver = receiver
        self.server: AssociationServer | None = None
        self.port: int | None = None
        self.tls_port: int | None = None

    async def start(self, listener: socket.socket | None = None, *, owner: bool = True) -> None:
        config = self.receiver.config
        server = self.server = AssociationServer(
            self.receiver, set(SOP_CLASSES), set(TRANSFER_SYNTAXES)
        )
        if listener is None:
            self.port = server.start(config.host, config.port)
        else:
            self.port = server.serve(listener, owner=owner)
        if config.tls_port is not None and owner:  # the hub process only
            self.tls_port = server.start(config.host, config.tls_port, tls=tls_context(config))

    async def stop_accepting(self) -> None:
        if self.server is not None:
            await asyncio.to_thread(self.server.stop_accepting)

    async def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            await asyncio.to_thread(server.stop)


def tls_context(config: DicomConfig) -> ssl.SSLContext:
    """The TLS port's server context: TLS 1.2 or later, the configured certificate, and a
    client certificate required when ``tls_client_ca`` is set."""
    assert config.tls_certificate is not None and config.tls_private_key is not None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.tls_certificate, config.tls_private_key)
    if config.tls_client_ca is not None:
        context.load_verify_locations(config.tls_client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context
