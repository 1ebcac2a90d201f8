"""DICOM peers for tests: an SCU that sends a folder, an SCP that can be down, refuse or accept.

These are the peers the hub's own suite uses; plugin authors can use them the same way.

- :func:`send_files` sends files (DICOM File Format) with pynetdicom, the data set bytes as they
  are in the file (no decode/re-encode), over one or several associations.
- :func:`echoscu` / :func:`storescu` run dcmtk's tools and return the completed process.
- :class:`DicomPeer` is a Storage SCP on 127.0.0.1 that is ``down`` (nothing listens on its
  port), ``refusing`` (A-ASSOCIATE-RJ) or ``accepting``; while accepting it can answer chosen
  SOP Instance UIDs with a failure status. Like a real PACS it rejects an association whose
  called AE title is not its own. It keeps what it received, byte for byte, with the calling
  and called AE titles of the association that brought it.
- :func:`write_synthetic_series` writes small valid files (no numpy needed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset as _read_dataset
from pydicom.filereader import read_preamble
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.events import EventHandlerType
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # made at import time; the stubs omit it
from pynetdicom.transport import ThreadedAssociationServer

# The production modules, not copies: importing the shim applies the hub's pynetdicom
# workaround (a C-STORE response the requestor's reactor would drop is put back), and both give
# TCP_NODELAY on both ends, so the kit's peers run exactly the code the forwarder and receiver run.
from plugins.dicom.net import NoDelayServer
from plugins.dicom.pynetdicom_shim import NoDelayAE, send_files_as_stored, start_server

__all__ = [
    "DicomPeer",
    "ReceivedInstance",
    "SendResult",
    "echoscu",
    "file_meta_of",
    "send_files",
    "storage_sop_classes",
    "storescu",
    "write_synthetic_series",
]


def storage_sop_classes() -> set[str]:
    """UIDs of every standard storage SOP class pynetdicom knows."""
    from pynetdicom.presentation import AllStoragePresentationContexts

    return {str(cx.abstract_syntax) for cx in AllStoragePresentationContexts}


def file_meta_of(path: Path) -> tuple[Dataset, int]:
    """(file meta, offset of the data set) of a DICOM file; meta is empty if there is none."""
    with open(path, "rb") as fp:
        read_preamble(fp, False)
        meta = _read_dataset(fp, False, True, stop_when=lambda tag, vr, length: tag.group != 2)
        return meta, fp.tell()


def dataset_bytes(path: Path) -> bytes:
    """The encoded data set of a DICOM file, without preamble and file meta."""
    _meta, offset = file_meta_of(path)
    with open(path, "rb") as fp:
        fp.seek(offset)
        return fp.read()


@dataclass(frozen=True)
class SendResult:
    """What happened to one file a test sent: the SOP Instance UID and the peer's status."""
    path: Path
    sop_instance_uid: str | None
    status: int | None  # None: not sent (association failed or rejected)
    error: str | None = None


def _send_batch(
    host: str, port: int, called_ae: str, calling_ae: str, paths: Sequence[Path], max_pdu: int
) -> list[SendResult]:
    metas = {p: file_meta_of(p)[0] for p in paths}
    send_files_as_stored()  # as they are (also what the hub's forwarder does)
    ae = NoDelayAE(ae_title=calling_ae)
    ae.maximum_pdu_size = max_pdu
    # Generous: a loaded CI machine must not turn a slow answer into a missing one.
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
    pairs: dict[str, set[str]] = {}
    for meta in metas.values():
        pairs.setdefault(str(meta.MediaStorageSOPClassUID), set()).add(str(meta.TransferSyntaxUID))
    # One context per (SOP class, transfer syntax): the acceptor picks one syntax per context.
    contexts = [build_context(sop, t) for sop, ts in sorted(pairs.items()) for t in sorted(ts)]
    if len(contexts) > 128:
        raise ValueError("more than 128 presentation contexts; split the batch")
    assoc = ae.associate(host, port, contexts=contexts, ae_title=called_ae)
    if not assoc.is_established:
        why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "failed"
        return [SendResult(p, str(metas[p].MediaStorageSOPInstanceUID), None, why) for p in paths]
    results: list[SendResult] = []
    try:
        for i, path in enumerate(paths, start=1):
            uid = str(metas[path].MediaStorageSOPInstanceUID)
            try:
                rsp = assoc.send_c_store(path, msg_id=i % 65536)
            except Exception as err:  # noqa: BLE001 — reported per file
                results.append(SendResult(path, uid, None, repr(err)))
                continue
            status = getattr(rsp, "Status", None)
            if status is None:
                why = "aborted" if assoc.is_aborted else "no valid response in time"
                results.append(SendResult(path, uid, None, why))
                # Without a response the association is unusable; sending on would only wait
                # out the timeout once pynetdicom has not yet noticed that it was aborted.
                if assoc.is_established:
                    assoc.abort()
                results += [
                    SendResult(p, str(metas[p].MediaStorageSOPInstanceUID), None, "not sent: " + why)
                    for p in paths[i:]
                ]
                break
            results.append(SendResult(path, uid, int(status)))
    finally:
        if assoc.is_established:
            assoc.release()
    return results


def send_files(
    host: str,
    port: int,
    paths: Iterable[Path],
    *,
    called_ae: str = "VETHUB",
    calling_ae: str = "TESTSCU",
    associations: int = 1,
    max_pdu: int = 131072,
) -> list[SendResult]:
    """Send each file by C-STORE (pynetdicom, blocking; run it in a thread from async code)."""
    files = [Path(p) for p in paths]
    if associations <= 1:
        return _send_batch(host, port, called_ae, calling_ae, files, max_pdu)
    batches = [files[i::associations] for i in range(associations)]
    with ThreadPoolExecutor(associations) as pool:
        parts = pool.map(
            lambda b: _send_batch(host, port, called_ae, calling_ae, b, max_pdu), batches
        )
    return [r for part in parts for r in part]


def _dcmtk(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise FileNotFoundError(f"dcmtk's {tool} is not installed")
    return path


def echoscu(host: str, port: int, *, called_ae: str, calling_ae: str, timeout: float = 30):
    """Run dcmtk ``echoscu``; returns the CompletedProcess (returncode 0 = echo succeeded)."""
    cmd = [_dcmtk("echoscu"), "-aet", calling_ae, "-aec", called_ae, host, str(port)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def storescu_command(
    host: str,
    port: int,
    paths: Iterable[Path],
    *,
    called_ae: str,
    calling_ae: str,
    extra: Sequence[str] = (),
) -> list[str]:
    """The ``storescu`` command line for sending ``paths`` (files or folders, recursively)."""
    return [
        _dcmtk("storescu"),
        "-aet",
        calling_ae,
        "-aec",
        called_ae,
        "+sd",
        "+r",
        "-R",  # propose only the contexts the files need (their own transfer syntaxes)
        *extra,
        host,
        str(port),
        *[str(p) for p in paths],
    ]


def storescu(
    host: str,
    port: int,
    paths: Iterable[Path],
    *,
    called_ae: str,
    calling_ae: str,
    extra: Sequence[str] = (),
    timeout: float = 300,
):
    """Run dcmtk ``storescu`` (with TCP_NODELAY=1); returns the CompletedProcess."""
    env = {**os.environ, "TCP_NODELAY": "1"}
    cmd = storescu_command(
        host, port, paths, called_ae=called_ae, calling_ae=calling_ae, extra=extra
    )
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@dataclass
class ReceivedInstance:
    """One instance a test SCP received, with the association's AE titles, for assertions."""
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    data: bytes  # the encoded data set as received
    calling_ae: str
    called_ae: str = ""


@dataclass
class DicomPeer:
    """A Storage SCP on 127.0.0.1 whose behaviour a test sets: down, refusing or accepting.

    Start it with :meth:`start` (it picks a free port and keeps it); then call :meth:`down`,
    :meth:`refuse` or :meth:`accept`. ``fail_instances`` maps SOP Instance UIDs to the status
    to answer with instead of Success (e.g. ``0xA700``), ``warn_instances`` likewise to a
    warning status. An association that calls another AE title than ``ae_title`` is rejected
    (permanent, "called AE title not recognised") and its title kept in ``wrong_called_aes``.
    Always :meth:`stop` it (the ``dicom_peer`` fixture does).
    """

    ae_title: str = "PEERSCP"
    host: str = "127.0.0.1"
    port: int = 0
    mode: str = "down"
    fail_instances: dict[str, int] = field(default_factory=dict)
    warn_instances: dict[str, int] = field(default_factory=dict)
    received: list[ReceivedInstance] = field(default_factory=list)
    rejected_associations: int = 0
    wrong_called_aes: list[str] = field(default_factory=list)
    _server: ThreadedAssociationServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> DicomPeer:
        self._listen()
        self.port = self._server.server_address[1]  # type: ignore[union-attr]
        self.mode = "accepting"
        return self

    def _listen(self) -> None:
        ae = AE(ae_title=self.ae_title)
        ae.maximum_pdu_size = 131072
        from pynetdicom.presentation import AllStoragePresentationContexts

        ts = [
            "1.2.840.10008.1.2",
            "1.2.840.10008.1.2.1",
            "1.2.840.10008.1.2.1.99",
            "1.2.840.10008.1.2.2",
            "1.2.840.10008.1.2.4.50",
            "1.2.840.10008.1.2.4.51",
            "1.2.840.10008.1.2.4.57",
            "1.2.840.10008.1.2.4.70",
            "1.2.840.10008.1.2.4.80",
            "1.2.840.10008.1.2.4.81",
            "1.2.840.10008.1.2.4.90",
            "1.2.840.10008.1.2.4.91",
            "1.2.840.10008.1.2.5",
        ]
        for cx in AllStoragePresentationContexts:
            assert cx.abstract_syntax is not None  # every storage context names its SOP class
            ae.add_supported_context(cx.abstract_syntax, ts)
        ae.add_supported_context(Verification)
        handlers: list[EventHandlerType] = [
            (evt.EVT_C_STORE, self._on_store), (evt.EVT_REQUESTED, self._on_requested)]
        self._server = start_server(
            ae, (self.host, self.port), handlers, NoDelayServer, name="vethub-test-peer"
        )

    def _on_requested(self, event) -> None:
        called = str(event.assoc.requestor.primitive.called_ae_title).strip()
        if called != self.ae_title:
            with self._lock:
                self.wrong_called_aes.append(called)
            event.assoc.acse.send_reject(0x01, 0x01, 0x07)  # permanent, called AE not recognised
            event.assoc.kill()
            return
        if self.mode == "refusing":
            with self._lock:
                self.rejected_associations += 1
            event.assoc.acse.send_reject(0x02, 0x01, 0x01)  # transient, no reason given
            event.assoc.kill()  # waits until the A-ASSOCIATE-RJ has gone out

    def _on_store(self, event) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        if uid in self.fail_instances:
            return self.fail_instances[uid]
        with self._lock:
            self.received.append(
                ReceivedInstance(
                    str(event.request.AffectedSOPClassUID),
                    uid,
                    str(event.context.transfer_syntax),
                    event.encoded_dataset(include_meta=False),
                    str(event.assoc.requestor.ae_title).strip(),
                    str(event.assoc.requestor.primitive.called_ae_title).strip(),
                )
            )
        return self.warn_instances.get(uid, 0x0000)

    def down(self) -> None:
        """Stop listening; connections to the port are refused until :meth:`accept`."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self.mode = "down"

    def refuse(self) -> None:
        """Listen, but reject every association (A-ASSOCIATE-RJ, transient)."""
        if self._server is None:
            self._listen()
        self.mode = "refusing"

    def accept(self) -> None:
        """Listen and accept associations."""
        if self._server is None:
            self._listen()
        self.mode = "accepting"

    def stop(self) -> None:
        self.down()

    def received_uids(self) -> list[str]:
        with self._lock:
            return [r.sop_instance_uid for r in self.received]

    def received_datasets(self) -> list[tuple[str, bytes]]:
        """(SOP Instance UID, encoded data set) of everything received, in order."""
        with self._lock:
            return [(r.sop_instance_uid, r.data) for r in self.received]


CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
DX_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"
_SOP_BY_MODALITY = {
    "CT": CT_IMAGE_STORAGE,
    "MR": MR_IMAGE_STORAGE,
    "DX": DX_IMAGE_STORAGE,
    "CR": "1.2.840.10008.5.1.4.1.1.1",
    "US": "1.2.840.10008.5.1.4.1.1.6.1",
}


def synthetic_dataset(
    *,
    modality: str = "CT",
    rows: int = 16,
    columns: int = 16,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    number: int = 1,
    animal_name: str = "Rex",
    animal_id: str = "A-1",
    species: str = "Canine",
    responsible_person: str = "Smith^Jane",
    pixel_byte: int | None = None,
) -> Dataset:
    """A valid 16-bit monochrome image data set with the header fields the hub keeps."""
    sop_class = _SOP_BY_MODALITY.get(modality, CT_IMAGE_STORAGE)
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.StudyDate = "20261120"
    ds.Modality = modality
    ds.InstitutionName = "Testville Veterinary Clinic"
    ds.StudyDescription = f"{modality} synthetic study"
    ds.PatientName = animal_name
    ds.PatientID = animal_id
    ds.PatientSpeciesDescription = species
    ds.ResponsiblePerson = responsible_person
    ds.BodyPartExamined = "THORAX"
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.SeriesNumber = 1
    ds.InstanceNumber = number
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    fill = (number * 7) % 256 if pixel_byte is None else pixel_byte
    ds.PixelData = bytes([fill, (fill * 3) % 256]) * (rows * columns)
    return ds


def write_dataset(ds: Dataset, path: Path, transfer_syntax: str = ExplicitVRLittleEndian) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(transfer_syntax)
    ds.file_meta = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_synthetic_series(
    folder: Path,
    count: int,
    *,
    modality: str = "CT",
    rows: int = 16,
    columns: int = 16,
    study_uid: str | None = None,
    **fields,
) -> list[Path]:
    """Write ``count`` instances of one series into ``folder``; returns their paths in order."""
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    paths = []
    for n in range(1, count + 1):
        ds = synthetic_dataset(
            modality=modality,
            rows=rows,
            columns=columns,
            study_uid=study_uid,
            series_uid=series_uid,
            number=n,
            **fields,
        )
        paths.append(write_dataset(ds, Path(folder) / f"{modality}{n:05d}.dcm"))
    return paths
