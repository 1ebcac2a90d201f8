"""A large data set written to its file while it arrives (the hub's upper layer only).

An instance is normally held until its last fragment and written with one writev
(:meth:`DicomReceiver.receive_instance`): the fastest way for the images modalities send. Once
an association holds :data:`STREAM_AFTER` bytes of one data set, the header is checked from
them, the temporary file is opened and what is held is written; from then on the data set is
written each time that much has come in again, so one association holds at most
``STREAM_AFTER`` plus one PDU however large the instance. At the last fragment the file is
fsynced and linked into place and its row committed, exactly as for a small instance.

A refused header, or a storage error on the way, is answered when the data set is complete;
what arrives until then is read and dropped.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset

from .storage import PendingFile, StorageError, StoredFile

if TYPE_CHECKING:
    from hub.imaging.callers import Caller

    from .receiver import DicomReceiver, Prepared

log = logging.getLogger(__name__)

STREAM_AFTER = 4 * 1024 * 1024


class StreamedInstance:
    """An instance being written while it arrives; see the module docstring."""

    def __init__(self, receiver: DicomReceiver, prepared: Prepared) -> None:
        self.receiver = receiver
        self.prepared = prepared
        self.status: Dataset | None = None  # a failure, once one happened
        self.file: PendingFile | StoredFile | None = None
        try:
            self.file = receiver.store.open(prepared.relpath)
            if isinstance(self.file, PendingFile):
                self.file.write([prepared.head, *prepared.dataset])
        except StorageError as err:
            self._failed(err)

    @classmethod
    def open(
        cls, receiver: DicomReceiver, caller: Caller, sop_class: str, sop_instance: str,
        transfer_syntax: str, parts: list[memoryview],
    ) -> StreamedInstance | Dataset:
        """Check the header from the first ``parts`` and start the file; or the refusal."""
        prepared = receiver.prepare_instance(caller, sop_class, sop_instance, transfer_syntax, parts)
        if isinstance(prepared, Dataset):
            return prepared
        return cls(receiver, prepared)

    def write(self, parts: list[memoryview]) -> None:
        if self.status is not None or not isinstance(self.file, PendingFile):
            return  # failed already, or a re-sent instance whose file is kept
        try:
            self.file.write(parts)
        except StorageError as err:
            self._failed(err)

    def finish(self) -> Dataset:
        """Blocking: fsync and link the file, commit the row; the C-STORE status."""
        from .receiver import commit_failure, status_dataset

        try:
            if self.status is not None:
                return self.status
            assert self.file is not None
            try:
                stored = self.file if isinstance(self.file, StoredFile) else self.file.commit()
            except StorageError as err:
                return status_dataset(err.status, str(err))
            item = replace(self.prepared.item, size_bytes=stored.size)
            try:
                self.receiver.committer.submit(item)
            except Exception as err:
                return commit_failure(item, err)
            return status_dataset(0x0000)
        finally:
            self.close()

    def close(self) -> None:
        if isinstance(self.file, PendingFile):
            self.file.close()
        self.file = None

    def _failed(self, err: StorageError) -> None:
        from .receiver import status_dataset

        log.warning("streaming %s failed: %s", self.prepared.relpath.name, err)
        self.status = status_dataset(err.status, str(err))
        self.close()
