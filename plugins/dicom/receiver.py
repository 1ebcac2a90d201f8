"""The DICOM receiver: a Storage SCP (and Verification SCP) inside the hub process.

The receiver is engine-neutral: an :class:`~plugins.dicom.engine.AssociationEngine` (the hub's
own upper layer, or pynetdicom's with ``engine = "pynetdicom"``) runs each association in a
thread of its own, asks :class:`~plugins.dicom.acceptance.Acceptance` whether it may go ahead,
and calls :meth:`DicomReceiver.receive_instance` for each C-STORE. That does the blocking
work in the association's thread (check the header from the received bytes, write and fsync
the file), then hands the row to the committer thread (:class:`Committer`) and waits for the
commit before answering the C-STORE: Success means the file is durable and its row committed.

Who may call: the association's calling AE title must be registered (the core's caller lookup,
:mod:`hub.imaging.callers`) and its called AE title must be the hub's; anything else is
rejected (:mod:`plugins.dicom.acceptance`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset

from hub.imaging.callers import Caller
from hub.imaging.service import ImagingError, ReceivedInstance
from hub.ops.refusals import Refusals, is_refusal

from .acceptance import Acceptance
from .committer import Committer
from .config import DicomConfig
from .engine import AssociationEngine, make_engine
from .filemeta import file_meta
from .header import HeaderError, parse_fragments
from .relay import RelayCommitter
from .storage import DicomStore, StorageError, instance_relpath

if TYPE_CHECKING:
    from hub.core import Hub

log = logging.getLogger(__name__)

STATUS_NOT_AUTHORISED = 0x0124
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000


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
    """The hub's DICOM receiver: its storage, committer and acceptance rule, and the
    association engine ``[dicom] engine`` picks; see the module docstring."""

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
        self.refusals = Refusals(hub)  # every refusal logged, counted, reported (docs/operator-guide.md)
        self.acceptance = Acceptance(hub, config, self.store.root, self.refusals)
        self.engine: AssociationEngine = make_engine(self)

    @property
    def port(self) -> int | None:
        """The bound port, once started."""
        return self.engine.port

    @property
    def tls_port(self) -> int | None:
        """The TLS port, when configured (the hub's engine, in the hub process)."""
        return self.engine.tls_port

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self, listener: socket.socket | None = None, *, owner: bool = True) -> None:
        """Listen on the configured address, or accept on ``listener`` (already listening;
        ``owner=False`` in a worker process, which shares the hub process's)."""
        loop = asyncio.get_running_loop()
        self.refusals.bind(loop)
        self.acceptance.bind(loop)
        await self.acceptance.prepare()
        self.store.root.mkdir(parents=True, exist_ok=True)
        self.committer.start(loop)
        await self.engine.start(listener, owner=owner)
        log.info(
            "DICOM receiver %s listening on %s:%s, storing under %s",
            self.config.ae_title, self.config.host, self.port, self.store.root,
        )

    async def stop_accepting(self) -> None:
        """Accept no new association; those in progress go on (the hub's engine only)."""
        await self.engine.stop_accepting()

    async def stop(self) -> None:
        await self.engine.stop()
        await asyncio.to_thread(self.committer.stop)
        self.acceptance.close()

    # --- C-STORE ------------------------------------------------------------------------------

    def receive_instance(
        self,
        caller: Caller,
        sop_class: str,
        sop_instance: str,
        transfer_syntax: str,
        fragments: list[memoryview],
        head: bytes | None = None,
    ) -> Dataset:
        """Blocking, in the association's thread: check the header, write the file durably,
        commit the row; the C-STORE status to answer (a refusal is also logged and counted).
        The arguments are :meth:`prepare_instance`'s."""
        answer = self._receive_instance(
            caller, sop_class, sop_instance, transfer_syntax, fragments, head
        )
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
        fragments: list[memoryview],
        head: bytes | None = None,
    ) -> Dataset:
        prepared = self.prepare_instance(
            caller, sop_class, sop_instance, transfer_syntax, fragments, head
        )
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
        fragments: list[memoryview],
        head: bytes | None = None,
    ) -> Prepared | Dataset:
        """Blocking: check the header and build the file's path and bytes; or a failure status.

        ``fragments`` is the data set as received (the P-DATA values, or one piece), written
        as it is rather than joined first. ``head``: the preamble and file meta as the engine
        makes them; by default the hub's own (:func:`~plugins.dicom.filemeta.file_meta`).
        """
        pieces: list[bytes | memoryview] = list(fragments)  # the list is the caller's
        try:
            header = parse_fragments(
                fragments, transfer_syntax,
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

        if head is None:
            head = file_meta(
                header.sop_class_uid, header.sop_instance_uid, transfer_syntax, caller.calling_ae
            )
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


def storage_root(hub: Hub, config: DicomConfig) -> Path:
    """Where the receiver stores instances: ``storage_root``, else the data dir's ``dicom``."""
    return (config.storage_root or (hub.data_dir / "dicom")).resolve()
