"""The seam between the receiver and the code that speaks the DICOM upper layer.

An :class:`AssociationEngine` accepts associations and, for each, asks the receiver's
:class:`~plugins.dicom.acceptance.Acceptance` whether it may go ahead, and hands each C-STORE's
data set to :meth:`DicomReceiver.receive_instance
<plugins.dicom.receiver.DicomReceiver.receive_instance>` (in the association's own thread),
answering with the status it returns. The receiver owns the storage, the committer and the
rule; an engine owns sockets, threads and PDUs. ``[dicom] engine`` picks one:

- ``"hub"``: :class:`plugins.dicom.hub_engine.HubEngine`, the hub's own upper layer (the
  default; limits, streaming, TLS and shared listeners for ``processes`` > 1);
- ``"pynetdicom"``: :class:`plugins.dicom.pynetdicom_engine.PynetdicomEngine`, for comparison.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Protocol

from pydicom.uid import AllTransferSyntaxes
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # made at import time; the stubs omit it

if TYPE_CHECKING:
    from .receiver import DicomReceiver

# What either engine accepts: every standard storage SOP class, and Verification (C-ECHO).
SOP_CLASSES = [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts] + [
    str(Verification)
]

# Every transfer syntax pydicom knows: data sets are stored as received, never decoded, so
# the hub need not support a codec to accept one.
TRANSFER_SYNTAXES = [str(ts) for ts in AllTransferSyntaxes]


class AssociationEngine(Protocol):
    """What a receiver starts, stops and reads its ports from."""

    port: int | None  # the bound port once started
    tls_port: int | None  # the TLS port's, when the config has one and the engine serves it

    async def start(self, listener: socket.socket | None = None, *, owner: bool = True) -> None:
        """Listen on the configured address, or accept on ``listener`` (already listening;
        ``owner=False`` in a worker process, which shares the hub process's). An engine that
        cannot share a listener raises ValueError when given one."""

    async def stop_accepting(self) -> None:
        """Accept no new association; those in progress go on (a no-op where it cannot)."""

    async def stop(self) -> None:
        """Stop accepting, end the associations in progress and wait for their threads."""


def make_engine(receiver: DicomReceiver) -> AssociationEngine:
    """The engine ``[dicom] engine`` names, for ``receiver``."""
    if receiver.config.engine == "pynetdicom":
        from .pynetdicom_engine import PynetdicomEngine  # imports pynetdicom's server side

        return PynetdicomEngine(receiver)
    from .hub_engine import HubEngine

    return HubEngine(receiver)
