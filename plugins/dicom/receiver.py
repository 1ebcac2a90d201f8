"""The DICOM receiver: a Storage SCP (and Verification SCP) inside the hub process.

Each association runs in a thread of its own (:mod:`plugins.dicom.association`, or
pynetdicom's with ``engine = "pynetdicom"``). :meth:`DicomReceiver.receive_instance` does the
blocking work in that thread (check the header from the received bytes, write and fsync the
file), then hands the row to the committer thread (:class:`Committer`) and waits for the commit
before answering the C-STORE: Success means the file is durable and its row committed.

Who may call: the association's calling AE title must be registered (the core's caller lookup,
:mod:`hub.imaging.callers`) and its called AE title must be the hub's; anything else is
rejected (:mod:`plugins.dicom.acceptance`, one rule for both engines).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from dataclasses import dataclass, replace
from io import BytesIO
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pydicom.uid import AllTransferSyntaxes
from pynetdicom import AE, evt
from pynetdicom.dsutils import encode_file_meta
from pynetdicom.events import EventHandlerType
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # made at import time; the stubs omit it
from pynetdicom.transport import ThreadedAssociationServer

from hub.imaging.callers import Caller
from hub.imaging.service import ImagingError, ReceivedInstance
from hub.ops.refusals import Refusals, is_refusal

from .acceptance import Acceptance, Rejection
from .association import AssociationServer
from .committer import Committer
from .config import DicomConfig
from .filemeta import file_meta
from .header import HeaderError, parse_fragments, parse_header
from .net import NoDelayServer
from .pynetdicom_shim import start_server
from .relay import RelayCommitter
from .storage import DicomStore, StorageError, instance_relpath

if TYPE_CHECKING:
    from hub.core import Hub

log = logging.getLogger(__name__)

STATUS_NOT_AUTHORISED = 0x0124
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000

# A data set as received: pynetdicom's stream, or the hub's upper layer's P-DATA fragments.
DataSetBytes = BytesIO | list[memoryview]

# Every transfer syntax pydicom knows: data sets are stored as received, never decoded, so
# the hub need not support a codec to accept one.
TRANSFER_SYNTAXES = [str(ts) for ts in AllTransferSyntaxes]


@dataclass(frozen=True, slots=True)
class Prepared:
    """An instance whose header passed the checks: its row, path and file bytes."""

    item: ReceivedInstance
    relpath: PurePosixPath
    head: bytes  # preamble, DICM and the file meta
    dataset: list[bytes | memoryview]  # the data set as received, in pieces


def status_dataset(code: int, comment: str | None = None) -> Dataset:
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = "".join(c for c in comment if 32 <= ord(c) < 127)[:64]
    return ds


class DicomReceiver:
    def __init__(
        self, hub: Hub, config: DicomConfig, committer: Committer | RelayCommitter | None = None
    ) -> None:
        """``committer``: where rows go; by default a committer of this process's own (a
        worker process passes a :class:`RelayCommitter` to the hub process's)."""
        self.hub = hub
        self.config = config
        self.store = DicomStore(storage_root(hub, config), overwrite=config.overwrite_resent)
        self.committer = committer or Committer(
            hub,
            stable_age=config.stable_age,
            overwrite=config.overwrite_resent,
            max_batch=config.commit_batch,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ae: AE | None = None
        self._server: ThreadedAssociationServer | None = None
        self._associations: AssociationServer | None = None  # the hub's own (engine = "hub")
        self.port: int | None = None
        self.tls_port: int | None = None
        self.refusals = Refusals(hub)  # every refusal logged, counted, reported (docs/operator-guide.md)
        self.acceptance = Acceptance(hub, config, self.store.root, self.refusals)

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self, listener: socket.socket | None = None, *, owner: bool = True) -> None:
        """Listen on the configured address, or accept on ``listener`` (already listening;
        ``owner=False`` in a worker process, which shares the hub process's)."""
        self._loop = asyncio.get_running_loop()
        self.refusals.bind(self._loop)
        self.acceptance.bind(self._loop)
        self.store.root.mkdir(parents=True, exist_ok=True)
        self.committer.start(self._loop)
        if self.config.engine == "hub":
            supported = {str(cx.abstract_syntax) for cx in AllStoragePresentationContexts}
            supported.add(str(Verification))
            self._associations = AssociationServer(self, supported, set(TRANSFER_SYNTAXES))
            if listener is None:
                self.port = self._associations.start(self.config.host, self.config.port)
            else:
                self.port = self._associations.serve(listener, owner=owner)
            if self.config.tls_port is not None and owner:  # the hub process only
                self.tls_port = self._associations.start(
                    self.config.host, self.config.tls_port, tls=tls_context(self.config)
                )
            log.info(
                "DICOM receiver %s listening on %s:%s, storing under %s",
                self.config.ae_title, self.config.host, self.port, self.store.root,
            )
            return
        if listener is not None:
            raise ValueError("a shared listener needs engine = \"hub\"")
        ae = AE(ae_title=self.config.ae_title)
        ae.maximum_associations = self.config.max_associations
        ae.maximum_pdu_size = self.config.max_pdu
        ae.require_called_aet = False  # checked in _on_requested, to record the rejection
        ae.network_timeout = 60
        ae.dimse_timeout = 60
        for cx in AllStoragePresentationContexts:
            assert cx.abstract_syntax is not None  # every storage context names its SOP class
            ae.add_supported_context(cx.abstract_syntax, TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification, TRANSFER_SYNTAXES)
        handlers: list[EventHandlerType] = [
            (evt.EVT_REQUESTED, self._on_requested), (evt.EVT_C_STORE, self._on_store)
        ]

        def _start() -> ThreadedAssociationServer:
            return start_server(ae, (self.config.host, self.config.port), handlers, NoDelayServer)

        self._server = await asyncio.to_thread(_start)
        self._ae = ae
        self.port = self._server.server_address[1]
        log.info(
            "DICOM receiver %s listening on %s:%s, storing under %s",
            self.config.ae_title,
            self.config.host,
            self.port,
            self.store.root,
        )

    async def stop_accepting(self) -> None:
        """Accept no new association; those in progress go on (the hub's engine only)."""
        if self._associations is not None:
            await asyncio.to_thread(self._associations.stop_accepting)

    async def stop(self) -> None:
        associations, self._associations = self._associations, None
        if associations is not None:
            await asyncio.to_thread(associations.stop)
        server, ae = self._server, self._ae
        self._server = self._ae = None
        if server is not None and ae is not None:

            def _stop() -> None:
                server.shutdown()
                for assoc in list(ae.active_associations):
                    assoc.abort()

            await asyncio.to_thread(_stop)
        await asyncio.to_thread(self.committer.stop)

    # --- association acceptance (pynetdicom's engine) -----------------------------------------

    def _on_requested(self, event: Any) -> None:
        assoc = event.assoc
        rq = assoc.requestor.primitive
        verdict = self.acceptance.decide(
            str(rq.calling_ae_title or "").strip(),
            str(rq.called_ae_title or "").strip(),
            str(assoc.requestor.address),
        )
        if isinstance(verdict, Rejection):
            self.acceptance.reject(verdict)
            assoc.acse.send_reject(*verdict.rsd)
            assoc.kill()  # returns once the A-ASSOCIATE-RJ has been sent
            return
        assoc.vethub_caller = verdict

    # --- C-STORE ------------------------------------------------------------------------------

    def _on_store(self, event: Any) -> Dataset:
        try:
            return self._store(event)
        except Exception as err:  # never let a bad instance take the receiver down
            log.exception("C-STORE failed unexpectedly")
            return status_dataset(STATUS_CANNOT_UNDERSTAND, f"processing failure: {type(err).__name__}")

    def _store(self, event: Any) -> Dataset:
        caller: Caller | None = getattr(event.assoc, "vethub_caller", None)
        if caller is None:
            return status_dataset(STATUS_NOT_AUTHORISED, "calling AE not identified")
        request = event.request
        return self.receive_instance(
            caller,
            str(request.AffectedSOPClassUID),
            str(request.AffectedSOPInstanceUID),
            str(event.context.transfer_syntax),
            request.DataSet,
            event.file_meta,
        )

    def receive_instance(
        self,
        caller: Caller,
        sop_class: str,
        sop_instance: str,
        transfer_syntax: str,
        data: DataSetBytes,
        meta: Any = None,
    ) -> Dataset:
        """Blocking, in the association's thread: check the header, write the file durably,
        commit the row; the C-STORE status to answer (a refusal is also logged and counted)."""
        answer = self._receive_instance(caller, sop_class, sop_instance, transfer_syntax, data, meta)
        if is_refusal(int(answer.Status)):
            self.refusals.refused(int(answer.Status), str(answer.get("ErrorComment", "")),
                                  practice_id=caller.practice_id, calling_ae=caller.calling_ae,
                                  sop_instance_uid=sop_instance, root=self.store.root)
        return answer

    def _receive_instance(
        self,
        caller: Caller,
        sop_class: str,
        sop_instance: str,
        transfer_syntax: str,
        data: DataSetBytes,
        meta: Any = None,
    ) -> Dataset:
        prepared = self.prepare_instance(caller, sop_class, sop_instance, transfer_syntax, data, meta)
        if isinstance(prepared, Dataset):
            return prepared
        try:
            stored = self.store.write(prepared.relpath, [prepared.head, *prepared.dataset])
        except StorageError as err:
            return status_dataset(err.status, str(err))
        item = prepared.item
        if stored.size != item.size_bytes:  # a re-sent instance: the file kept is the one filed
            item = replace(item, size_bytes=stored.size)
        try:
            self.committer.submit(item)
        except Exception as err:
            return commit_failure(item, err)
        return status_dataset(0x0000)

    def prepare_instance(
        self,
        caller: Caller,
        sop_class: str,
        sop_instance: str,
        transfer_syntax: str,
        data: DataSetBytes,
        meta: Any = None,
    ) -> Prepared | Dataset:
        """Blocking: check the header and build the file's path and bytes; or a failure status.

        ``data`` is the data set as received: a stream (pynetdicom's), or the P-DATA
        fragments (the hub's upper layer), written as they are rather than joined first.
        """
        pieces: list[bytes | memoryview]
        try:
            if isinstance(data, BytesIO):
                data.seek(0)
                pieces = [data.getvalue()]  # shares the bytes of a BytesIO made from bytes
                header = parse_header(
                    data, transfer_syntax,
                    expected_sop_class=sop_class, expected_sop_instance=sop_instance,
                )
            else:
                pieces = list(data)  # a list[memoryview] is not a list[bytes | memoryview]
                header = parse_fragments(
                    data, transfer_syntax,
                    expected_sop_class=sop_class, expected_sop_instance=sop_instance,
                )
            relpath = instance_relpath(
                caller.practice_id,
                header.study_instance_uid,
                header.series_instance_uid,
                header.sop_instance_uid,
            )
        except HeaderError as err:
            log.info("C-STORE from %s refused (0x%04X): %s", caller.calling_ae, err.status, err)
            return status_dataset(err.status, err.comment)
        except StorageError as err:
            return status_dataset(err.status, str(err))

        if meta is None:  # the hub's own upper layer
            head = file_meta(
                header.sop_class_uid, header.sop_instance_uid, transfer_syntax, caller.calling_ae
            )
        else:  # pynetdicom's, for its engine
            meta.SourceApplicationEntityTitle = caller.calling_ae
            head = b"\x00" * 128 + b"DICM" + encode_file_meta(meta)
        size = len(head) + sum(len(p) for p in pieces)
        item = ReceivedInstance(
            practice_id=caller.practice_id,
            calling_ae=caller.calling_ae,
            peer_address=caller.peer_address,
            sop_class_uid=header.sop_class_uid,
            sop_instance_uid=header.sop_instance_uid,
            study_instance_uid=header.study_instance_uid,
            series_instance_uid=header.series_instance_uid,
            transfer_syntax_uid=transfer_syntax,
            size_bytes=size,
            path=str(relpath),
            modality=header.modality,
            animal_name=header.animal_name,
            animal_id=header.animal_id,
            species=header.species,
            responsible_person=header.responsible_person,
            body_part=header.body_part,
            study_date=header.study_date,
            study_description=header.study_description,
            institution=header.institution,
        )
        return Prepared(item, relpath, head, pieces)


def commit_failure(item: ReceivedInstance, err: Exception) -> Dataset:
    """The C-STORE status for an instance whose row could not be committed."""
    if isinstance(err, ImagingError):
        return status_dataset(err.status, str(err))
    log.error("instance %s could not be committed: %r", item.sop_instance_uid, err)
    return status_dataset(STATUS_OUT_OF_RESOURCES, f"database unavailable: {type(err).__name__}")


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


def storage_root(hub: Hub, config: DicomConfig) -> Path:
    return (config.storage_root or (hub.data_dir / "dicom")).resolve()
