"""pynetdicom's upper layer as the receiver's engine (``[dicom] engine = "pynetdicom"``).

Kept to compare the hub's own engine with (it is several times slower: a polling thread pair
per association), and as a second implementation of the same rule: the tests run the
receiver on both. It has none of the hub engine's limits beyond ``max_associations``, no TLS
port and no listener shared between processes (the config refuses those).

pynetdicom calls :meth:`PynetdicomEngine._on_requested` in the association's thread once the
A-ASSOCIATE-RQ is in, and :meth:`PynetdicomEngine._on_store` for each C-STORE, with the data
set whole in a BytesIO; both hand over to the receiver.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.dsutils import encode_file_meta
from pynetdicom.events import EventHandlerType
from pynetdicom.transport import ThreadedAssociationServer

from hub.imaging.callers import Caller

from .acceptance import Rejection
from .engine import SOP_CLASSES, TRANSFER_SYNTAXES
from .filemeta import PREAMBLE
from .net import NoDelayServer
from .pynetdicom_shim import start_server
from .receiver import STATUS_CANNOT_UNDERSTAND, STATUS_NOT_AUTHORISED, status_dataset

if TYPE_CHECKING:
    from .receiver import DicomReceiver

log = logging.getLogger(__name__)


class PynetdicomEngine:
    """A receiver's associations served by a pynetdicom AE."""

    tls_port: int | None = None  # no TLS port on this engine

    def __init__(self, receiver: DicomReceiver) -> None:
        self.receiver = receiver
        self.port: int | None = None
        self._ae: AE | None = None
        self._server: ThreadedAssociationServer | None = None
        # each accepted association's caller, for its C-STOREs (gone with the association)
        self._callers: WeakKeyDictionary[Any, Caller] = WeakKeyDictionary()
        self._lock = threading.Lock()

    async def start(self, listener: socket.socket | None = None, *, owner: bool = True) -> None:
        if listener is not None:
            raise ValueError("a shared listener needs engine = \"hub\"")
        config = self.receiver.config
        ae = AE(ae_title=config.ae_title)
        ae.maximum_associations = config.max_associations
        ae.maximum_pdu_size = config.max_pdu
        ae.require_called_aet = False  # checked by the acceptance rule, to record the rejection
        ae.network_timeout = 60
        ae.dimse_timeout = 60
        for sop_class in SOP_CLASSES:
            ae.add_supported_context(sop_class, TRANSFER_SYNTAXES)
        handlers: list[EventHandlerType] = [
            (evt.EVT_REQUESTED, self._on_requested), (evt.EVT_C_STORE, self._on_store)
        ]
        address = (config.host, config.port)
        self._server = await asyncio.to_thread(start_server, ae, address, handlers, NoDelayServer)
        self._ae = ae
        self.port = self._server.server_address[1]

    async def stop_accepting(self) -> None:
        pass  # pynetdicom's server stops accepting only as it stops

    async def stop(self) -> None:
        server, ae = self._server, self._ae
        self._server = self._ae = None
        if server is not None and ae is not None:

            def _stop() -> None:
                server.shutdown()
                for assoc in list(ae.active_associations):
                    assoc.abort()

            await asyncio.to_thread(_stop)

    # --- pynetdicom's callbacks, in the association's thread ----------------------------------

    def _on_requested(self, event: Any) -> None:
        assoc = event.assoc
        rq = assoc.requestor.primitive
        acceptance = self.receiver.acceptance
        verdict = acceptance.decide(
            str(rq.calling_ae_title or "").strip(),
            str(rq.called_ae_title or "").strip(),
            str(assoc.requestor.address),
        )
        if isinstance(verdict, Rejection):
            acceptance.reject(verdict)
            assoc.acse.send_reject(*verdict.rsd)
            assoc.kill()  # returns once the A-ASSOCIATE-RJ has been sent
            return
        with self._lock:
            self._callers[assoc] = verdict

    def _on_store(self, event: Any) -> Dataset:
        try:
            return self._store(event)
        except Exception as err:  # never let a bad instance take the receiver down
            log.exception("C-STORE failed unexpectedly")
            return status_dataset(STATUS_CANNOT_UNDERSTAND, f"processing failure: {type(err).__name__}")

    def _store(self, event: Any) -> Dataset:
        caller = self._callers.get(event.assoc)
        if caller is None:
            return status_dataset(STATUS_NOT_AUTHORISED, "calling AE not identified")
        request = event.request
        meta = event.file_meta  # pynetdicom's file meta, as this engine always stored it
        meta.SourceApplicationEntityTitle = caller.calling_ae
        data = request.DataSet
        return self.receiver.receive_instance(
            caller,
            str(request.AffectedSOPClassUID),
            str(request.AffectedSOPInstanceUID),
            str(event.context.transfer_syntax),
            [memoryview(data.getvalue())],  # shares the bytes of a BytesIO made from bytes
            head=PREAMBLE + encode_file_meta(meta),
        )
