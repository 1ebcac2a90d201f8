"""Bad input never crashes the receiver or writes outside the root; a full disk is 0xA700."""

from __future__ import annotations

import asyncio
import random
import re
from pathlib import Path

from pydicom.dataelem import DataElement
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.dsutils import encode_file_meta
from sqlalchemy import func, select

from hub.imaging.models import Instance
from hub.testing.dicom import dataset_bytes, send_files, synthetic_dataset, write_synthetic_series
from hub.testing.fixtures_dicom import HUB_AE, PRACTICE_AE, dicom_port

CT = "1.2.840.10008.5.1.4.1.1.2"
EVIL = ["../", "../../etc/passwd", "..\\..\\x", "/etc/cron.d/x", "a/../../b", "\x00..", "~/.ssh"]
BAD_UIDS = ["", "1.2.abc", "../../1.2", "1..2", "01.2", "1.2.", "1" * 65, "1.2/3", ".", "1.2\x00"]
STRING_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC",
              "UI", "UR", "UT"}


def _encode(ds) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    return fp.getvalue()


def _file(folder: Path, n: int, data: bytes, sop_uid: str) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = folder / f"m{n:04d}.dcm"
    path.write_bytes(b"\x00" * 128 + b"DICM" + encode_file_meta(meta) + data)
    return path


def mutated_files(folder: Path, count: int, seed: int = 20261126) -> list[Path]:
    """``count`` data sets broken in seeded ways: truncated, bad VRs, bad UIDs, ``../`` in every
    string element, flipped bytes, absurd lengths."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(count):
        uid = f"1.2.826.0.1.3680043.10.1207.{seed}.{n}"
        ds = synthetic_dataset(sop_uid=uid, number=n, rows=4, columns=4)
        kind = n % 6
        if kind == 2:  # bad UIDs
            keyword = rng.choice(["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
            setattr(ds, keyword, rng.choice(BAD_UIDS))
        elif kind == 3:  # ../ in every string element, UIDs included
            evil = rng.choice(EVIL)
            for elem in list(ds):
                if elem.VR in STRING_VRS and elem.tag != 0x00080005:  # numeric strings become LO to carry the text
                    vr = "LO" if elem.VR in ("IS", "DS") else elem.VR
                    ds[elem.tag] = DataElement(elem.tag, vr, evil + elem.keyword)
        charset = b""
        if kind == 3:  # pydicom will not encode with a bogus character set: add it raw
            del ds.SpecificCharacterSet
            value = (rng.choice(EVIL) + "charset").encode("latin-1")
            value += b" " * (len(value) % 2)
            charset = b"\x08\x00\x05\x00CS" + len(value).to_bytes(2, "little") + value
        data = bytearray(charset + _encode(ds))
        if kind == 0:  # truncated
            data = data[: rng.randrange(1, len(data))]
        elif kind == 1:  # bad VRs: overwrite the VR of some elements
            for _ in range(rng.randint(1, 4)):
                at = rng.randrange(0, len(data) - 8)
                data[at + 4: at + 6] = bytes(rng.choice(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ?!\x00")
                                             for _ in range(2))
        elif kind == 4:  # flipped bytes
            for _ in range(rng.randint(1, 20)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind == 5:  # absurd length fields
            at = rng.randrange(0, max(1, len(data) - 8))
            data[at + 6: at + 8] = b"\xff\xff"
        paths.append(_file(folder, n, bytes(data), uid))
    return paths


FILE_RE = re.compile(r"p\d+/[0-9.]+/[0-9.]+/[0-9.]+\.dcm")


def _files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


async def test_a_thousand_mutated_data_sets(hub_factory, dicom_config_data, tmp_path):
    sandbox = tmp_path / "sandbox"
    root = sandbox / "store" / "dicom"
    hub = await hub_factory(dicom_config_data(dicom={"storage_root": str(root)}))
    inputs = mutated_files(tmp_path / "in", 1000)
    before_sandbox = _files_under(sandbox) if sandbox.exists() else set()

    results = await asyncio.to_thread(
        send_files, "127.0.0.1", dicom_port(hub), inputs, called_ae=HUB_AE, calling_ae=PRACTICE_AE
    )
    assert len(results) == 1000
    statuses: dict[int, int] = {}
    for r in results:
        assert r.status is not None, (r.path.name, r.error)  # every one got an answer
        statuses[r.status] = statuses.get(r.status, 0) + 1
        assert r.status == 0 or 0xA900 <= r.status <= 0xA9FF or 0xC000 <= r.status <= 0xCFFF, (
            r.path.name, hex(r.status)
        )
    assert statuses.get(0, 0) > 50 and sum(v for k, v in statuses.items() if k) > 300, statuses

    # Stored safely: only well-formed paths under the root, each byte-identical to what was sent.
    written = _files_under(sandbox) - before_sandbox
    assert written and all(f.startswith("store/dicom/") for f in written), written
    assert all(FILE_RE.fullmatch(f.removeprefix("store/dicom/")) for f in written), written
    async with hub.sessionmaker() as s:
        rows = list((await s.execute(select(Instance))).scalars())
    assert len(rows) == statuses[0] == len(written)
    sent = {r.sop_instance_uid: r.path for r in results if r.status == 0}
    for row in rows:
        assert dataset_bytes(root / row.path) == dataset_bytes(sent[row.sop_instance_uid])
        assert "\x00" not in (row.animal_name or "") and ".." not in row.path
    # Nothing escaped: no file appeared next to the sandbox either.
    assert {p.name for p in tmp_path.iterdir()} <= {"sandbox", "in", "hub.db", "hub.db-wal",
                                                      "hub.db-shm", "var", "dicom"}

    # The hub is still up and storing.
    good = write_synthetic_series(tmp_path / "good", 2)
    results = await asyncio.to_thread(
        send_files, "127.0.0.1", dicom_port(hub), good, called_ae=HUB_AE, calling_ae=PRACTICE_AE
    )
    assert [r.status for r in results] == [0, 0]


async def test_disk_full_is_out_of_resources_and_nothing_half_written(
    hub_factory, dicom_config_data, tiny_tmpfs, tmp_path
):
    hub = await hub_factory(dicom_config_data(dicom={"storage_root": str(tiny_tmpfs / "dicom")}))
    # 64x64x2 = 8 KiB of pixels each: the first ones fit, then the disk is full.
    paths = write_synthetic_series(tmp_path / "s", 60, rows=64, columns=64)
    results = await asyncio.to_thread(
        send_files, "127.0.0.1", dicom_port(hub), paths, called_ae=HUB_AE, calling_ae=PRACTICE_AE
    )
    ok = [r for r in results if r.status == 0]
    full = [r for r in results if r.status == 0xA700]
    assert ok and full and len(ok) + len(full) == 60, {hex(r.status or 0) for r in results}
    files = [p for p in (tiny_tmpfs / "dicom").rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.endswith(".tmp")]  # no temp file left behind
    assert len(files) == len(ok)
    by_uid = {r.sop_instance_uid: r.path for r in ok}
    async with hub.sessionmaker() as s:
        rows = list((await s.execute(select(Instance))).scalars())
        assert await s.scalar(select(func.count()).select_from(Instance)) == len(ok)
    for row in rows:  # every stored file is whole
        stored = tiny_tmpfs / "dicom" / row.path
        assert dataset_bytes(stored) == dataset_bytes(by_uid[row.sop_instance_uid])


async def test_storage_root_that_refuses_writes(hub_factory, dicom_config_data, tmp_path):
    """A root that cannot be written (here a path under a regular file): 0xA700, no row."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    hub = await hub_factory(dicom_config_data())
    from plugins.dicom.plugin import receiver_of

    receiver_of(hub).store.root = blocker / "dicom"  # the disk went away under the hub
    paths = write_synthetic_series(tmp_path / "s", 2)
    results = await asyncio.to_thread(
        send_files, "127.0.0.1", dicom_port(hub), paths, called_ae=HUB_AE, calling_ae=PRACTICE_AE
    )
    assert [r.status for r in results] == [0xA700, 0xA700]
    async with hub.sessionmaker() as s:
        assert await s.scalar(select(func.count()).select_from(Instance)) == 0


async def test_garbage_on_the_wire_leaves_the_receiver_up(dicom_hub, tmp_path):
    """Random bytes, a truncated PDU, a huge length, a P-DATA before any association."""
    import socket as socket_mod

    port = dicom_port(dicom_hub)
    rng = random.Random(7)
    payloads = [
        bytes(rng.randrange(256) for _ in range(200)),
        b"\x01\x00\x00\x00\x00\x10",  # A-ASSOCIATE-RQ header, body never comes
        b"\x01\x00\xff\xff\xff\xff" + b"x" * 10,  # absurd length
        b"\x04\x00\x00\x00\x00\x06\x00\x00\x00\x02\x01\x03",  # P-DATA first
        b"\x01\x00\x00\x00\x00\x44" + b"\x00" * 68,  # empty A-ASSOCIATE-RQ
    ]

    def _blast() -> None:
        for payload in payloads:
            with socket_mod.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(payload)
                s.shutdown(socket_mod.SHUT_WR)
                try:
                    while s.recv(4096):
                        pass
                except OSError:
                    pass

    await asyncio.to_thread(_blast)
    good = write_synthetic_series(tmp_path / "good", 1)
    results = await asyncio.to_thread(
        send_files, "127.0.0.1", port, good, called_ae=HUB_AE, calling_ae=PRACTICE_AE
    )
    assert [r.status for r in results] == [0]
