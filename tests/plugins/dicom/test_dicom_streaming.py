"""Large data sets are written to their file while they arrive: byte for byte, with the
same refusals, durability and row as a small one, and the hub's memory bounded."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import select

from hub.imaging.models import Instance
from hub.testing.dicom import file_meta_of
from hub.testing.dicom_raw import (
    A_ASSOCIATE_AC,
    CT_IMAGE,
    EXPLICIT_LE,
    IMPLICIT_LE,
    VERIFICATION,
    RawPeer,
    dimse_rq,
    large_instance,
    p_data_pdu,
    status_of,
)
from hub.testing.fixtures_dicom import HUB_AE, PRACTICE_AE, dicom_port
from plugins.dicom.plugin import receiver_of
from plugins.dicom.streaming import STREAM_AFTER

CONTEXTS = [(1, VERIFICATION, [IMPLICIT_LE]), (3, CT_IMAGE, [EXPLICIT_LE])]


def send_large(port: int, pixel_bytes: int, *, sop_uid: str | None = None,
               mangle=None) -> tuple[int, str, str]:
    """C-STORE one generated instance over a raw association; (status, sha256 of the data
    set sent, SOP Instance UID). Then a C-ECHO on the same association must still work."""
    sop_class, uid, head, pixels = large_instance(pixel_bytes, sop_uid=sop_uid)
    if mangle is not None:
        head = mangle(head)
    digest = hashlib.sha256(head)

    def pieces():
        yield head
        for piece in pixels:
            digest.update(piece)
            yield piece

    with RawPeer.connect(port, timeout=120) as peer:
        kind, body = peer.associate(HUB_AE, PRACTICE_AE, contexts=CONTEXTS, max_pdu=131072)
        assert kind == A_ASSOCIATE_AC, body
        status = peer.c_store(3, sop_class, uid, pieces())
        peer.send(p_data_pdu([(1, 0x03, dimse_rq(0x0030, VERIFICATION, 2))]))
        assert status_of(peer.response()) == 0
        peer.release()
    return status, digest.hexdigest(), uid


def file_digest(path: Path) -> str:
    """sha256 of the stored data set (after the file meta), read in pieces."""
    _meta, offset = file_meta_of(path)
    digest = hashlib.sha256()
    with open(path, "rb") as fp:
        fp.seek(offset)
        while piece := fp.read(1 << 20):
            digest.update(piece)
    return digest.hexdigest()


async def rows(hub) -> list[Instance]:
    async with hub.sessionmaker() as s:
        return list((await s.execute(select(Instance))).scalars())


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.name.endswith(".tmp")]


async def test_a_large_instance_is_streamed_and_stored_byte_for_byte(dicom_hub):
    port = dicom_port(dicom_hub)
    status, digest, uid = await asyncio.to_thread(send_large, port, 3 * STREAM_AFTER + 1234)
    assert status == 0
    (row,) = await rows(dicom_hub)
    path = receiver_of(dicom_hub).store.root / row.path
    assert row.sop_instance_uid == uid and row.size_bytes == path.stat().st_size
    assert file_digest(path) == digest
    # Sent again: Success, the first file kept, still one row.
    status, _, _ = await asyncio.to_thread(send_large, port, 3 * STREAM_AFTER + 1234, sop_uid=uid)
    assert status == 0 and len(await rows(dicom_hub)) == 1 and file_digest(path) == digest


async def test_a_large_instance_with_a_bad_header_is_refused_and_drained(dicom_hub):
    port = dicom_port(dicom_hub)

    def break_study_uid(head: bytes) -> bytes:
        # The synthetic Study Instance UID starts "1.2.826.0.1.3680043.8.498."; a letter in it
        # breaks the UID grammar without changing any length.
        at = head.index(b"\x20\x00\x0d\x00UI") + 8
        return head[:at] + b"X" + head[at + 1 :]

    status, _, _ = await asyncio.to_thread(
        send_large, port, 2 * STREAM_AFTER, mangle=break_study_uid
    )
    assert status == 0xA900
    assert await rows(dicom_hub) == []
    root = receiver_of(dicom_hub).store.root
    assert not root.exists() or not [p for p in root.rglob("*") if p.is_file()]


async def test_a_disk_filling_up_mid_stream_is_out_of_resources(
    hub_factory, dicom_config_data, tiny_tmpfs
):
    hub = await hub_factory(dicom_config_data(dicom={"storage_root": str(tiny_tmpfs)}))
    status, _, _ = await asyncio.to_thread(send_large, dicom_port(hub), 2 * STREAM_AFTER)
    assert status == 0xA700
    assert await rows(hub) == []
    assert not [p for p in tiny_tmpfs.rglob("*") if p.is_file()] and not leftovers(tiny_tmpfs)


def test_max_pdu_zero_is_refused_by_check_config(tmp_path: Path) -> None:
    config = tmp_path / "vethub.toml"
    config.write_text(
        '[database]\nurl = "sqlite+aiosqlite:///./x.db"\n[dicom]\nmax_pdu = 0\n', encoding="utf-8"
    )
    result = subprocess.run(
        [sys.executable, "-m", "hub.cli", "check-config", "--config", str(config)],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert "dicom.max_pdu" in result.stderr and "max_pdu = 0 (no limit) is not supported" in (
        result.stderr
    )


def _rss() -> int:
    with open("/proc/self/status") as fp:
        for line in fp:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.slow
async def test_a_gigabyte_instance_keeps_the_hub_s_memory_bounded(dicom_hub):
    """The hub (and the sender, which makes the data as it sends) run in this process: its
    RSS, sampled while the instance arrives, grows by less than 64 MB for 1 GB."""
    port = dicom_port(dicom_hub)
    before, peak, done = _rss(), [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], _rss())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        status, digest, _ = await asyncio.to_thread(send_large, port, 1024 * 1024 * 1024)
    finally:
        done.set()
        sampler.join()
    assert status == 0
    (row,) = await rows(dicom_hub)
    path = receiver_of(dicom_hub).store.root / row.path
    assert row.size_bytes == path.stat().st_size > 1024 * 1024 * 1024
    assert peak[0] - before < 64 * 1024 * 1024, f"RSS grew by {(peak[0] - before) >> 20} MiB"
    assert await asyncio.to_thread(file_digest, path) == digest
