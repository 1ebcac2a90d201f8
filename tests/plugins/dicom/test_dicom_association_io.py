"""The receiver's associations on the wire: streams cut anywhere, a peer that stalls, a stop
in the middle of a transfer."""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time

from sqlalchemy import func, select

from hub.imaging.models import Instance
from hub.testing.dicom import dataset_bytes, send_files, write_synthetic_series
from hub.testing.fixtures_dicom import HUB_AE, PRACTICE_AE, dicom_port
from plugins.dicom.plugin import receiver_of


class ChoppingProxy:
    """A TCP proxy that forwards the sender's bytes in random small pieces, one write each,
    and can be told to stop forwarding after ``hold_after`` bytes."""

    def __init__(self, target_port: int, *, seed: int, hold_after: int | None = None) -> None:
        self.target_port = target_port
        self.rng = random.Random(seed)
        self.hold_after = hold_after
        self.held = threading.Event()  # set once forwarding stopped at hold_after
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.threads: list[threading.Thread] = []
        self.sockets: list[socket.socket] = []
        self._spawn(self._accept)

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self.threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sockets.append(s)
        self._spawn(self._pump, client, upstream, True)
        self._spawn(self._pump, upstream, client, False)

    def _pump(self, src: socket.socket, dst: socket.socket, chop: bool) -> None:
        sent = 0
        try:
            while data := src.recv(65536):
                while data:
                    n = min(len(data), self.rng.choice([1, 3, 6, 7, 100, 4096, 70_000])) if chop else len(data)
                    if chop and self.hold_after is not None and sent + n > self.hold_after:
                        dst.sendall(data[: self.hold_after - sent])
                        self.held.set()
                        return
                    dst.sendall(data[:n])
                    sent, data = sent + n, data[n:]
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self.listener.close()
        for s in self.sockets:
            s.close()
        for thread in self.threads:
            thread.join(10)


async def _count(hub) -> int:
    async with hub.sessionmaker() as s:
        return await s.scalar(select(func.count()).select_from(Instance))


async def test_a_stream_cut_into_tiny_writes_is_stored_whole(dicom_hub, tmp_path):
    files = write_synthetic_series(tmp_path / "series", 3)
    proxy = ChoppingProxy(dicom_port(dicom_hub), seed=3)
    try:
        results = await asyncio.to_thread(
            send_files, "127.0.0.1", proxy.port, files, called_ae=HUB_AE, calling_ae=PRACTICE_AE
        )
    finally:
        await asyncio.to_thread(proxy.close)
    assert [r.status for r in results] == [0, 0, 0]
    assert await _count(dicom_hub) == 3


async def test_a_peer_that_stalls_is_aborted_and_others_still_served(
    hub_factory, dicom_config_data, tmp_path
):
    hub = await hub_factory(dicom_config_data(dicom={"artim_timeout": 0.5}))
    port = dicom_port(hub)

    def stall() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"\x01\x00\x00\x00\x01\x00" + b"\x00" * 10)  # an A-ASSOCIATE-RQ, cut short
            received = b""
            while len(received) < 10 and (chunk := s.recv(4096)):  # an A-ABORT is 10 bytes
                received += chunk
            return received

    started = time.monotonic()
    received = await asyncio.to_thread(stall)
    # PS3.8 §9.2.3: ARTIM expiring before the request is complete closes the connection.
    assert received == b"", received
    assert time.monotonic() - started < 20  # the timeout, not the peer, ended it
    good = write_synthetic_series(tmp_path / "good", 1)
    results = await asyncio.to_thread(
        send_files, "127.0.0.1", port, good, called_ae=HUB_AE, calling_ae=PRACTICE_AE
    )
    assert [r.status for r in results] == [0]


async def test_stopping_the_receiver_mid_transfer_keeps_nothing_half_written(
    dicom_hub, tmp_path
):
    receiver = receiver_of(dicom_hub)
    assert receiver is not None
    files = write_synthetic_series(tmp_path / "series", 2, rows=256, columns=256)
    proxy = ChoppingProxy(dicom_port(dicom_hub), seed=5, hold_after=200_000)
    sender = asyncio.create_task(asyncio.to_thread(
        send_files, "127.0.0.1", proxy.port, files, called_ae=HUB_AE, calling_ae=PRACTICE_AE
    ))
    try:
        deadline = time.monotonic() + 30
        while not proxy.held.is_set():
            assert time.monotonic() < deadline, "the transfer never reached the hold point"
            await asyncio.sleep(0.01)
        await asyncio.wait_for(receiver.stop(), 30)  # does not wait for the stalled peer
    finally:
        await asyncio.to_thread(proxy.close)
    results = await asyncio.wait_for(sender, 60)
    acknowledged = sum(1 for r in results if r.status == 0)
    assert acknowledged < len(files)
    assert await _count(dicom_hub) == acknowledged
    stored = [p for p in receiver.store.root.rglob("*") if p.is_file()]
    assert len(stored) == acknowledged and not [p for p in stored if p.name.endswith(".tmp")]


async def test_an_image_in_more_fragments_than_one_writev_takes(
    hub_factory, dicom_config_data, tmp_path
):
    """A 2.9 MB image in 2 KiB PDUs is ~1,400 fragments (IOV_MAX is 1024)."""
    hub = await hub_factory(dicom_config_data(dicom={"max_pdu": 2048}))
    (path,) = write_synthetic_series(tmp_path / "big", 1, rows=1200, columns=1200)
    results = await asyncio.to_thread(
        send_files, "127.0.0.1", dicom_port(hub), [path], called_ae=HUB_AE, calling_ae=PRACTICE_AE
    )
    assert [r.status for r in results] == [0]
    async with hub.sessionmaker() as s:
        (row,) = (await s.scalars(select(Instance))).all()
    stored = receiver_of(hub).store.root / row.path
    assert dataset_bytes(stored) == dataset_bytes(path)
    assert row.size_bytes == stored.stat().st_size


def test_the_engine_s_old_name_still_loads():
    from plugins.dicom.config import DicomConfig

    assert DicomConfig(engine="asyncio").engine == "hub"


async def test_running_out_of_file_descriptors_does_not_stop_the_listener(
    write_config, dicom_config_data, free_port, tmp_path
):
    """accept() failing with EMFILE is logged and retried; once descriptors are free again the
    hub takes associations as before (a `vethub run` limited to 100 descriptors)."""
    import resource

    from .daemon import start, stop, upgrade, wait_listening

    config = write_config(dicom_config_data(dicom={"port": free_port}))
    upgrade(config, tmp_path)
    log_path = tmp_path / "hub.log"

    def _limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (100, 100))

    with open(log_path, "w") as log_file:
        hub = start(config, tmp_path, output=log_file, preexec_fn=_limit)
    held: list[socket.socket] = []
    try:
        await asyncio.to_thread(wait_listening, hub, free_port)
        for _ in range(150):  # more than the hub has descriptors; the rest wait in the backlog
            held.append(await asyncio.to_thread(
                socket.create_connection, ("127.0.0.1", free_port), 10
            ))
        deadline = time.monotonic() + 30
        while "accepting a DICOM association failed" not in log_path.read_text():
            assert time.monotonic() < deadline, "the hub never ran out of descriptors"
            await asyncio.sleep(0.05)
        for s in held:
            s.close()
        held.clear()
        good = write_synthetic_series(tmp_path / "good", 1)
        deadline = time.monotonic() + 60
        while True:  # the abandoned connections are drained first
            results = await asyncio.to_thread(
                send_files, "127.0.0.1", free_port, good, called_ae=HUB_AE,
                calling_ae=PRACTICE_AE,
            )
            if results[0].status == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert [r.status for r in results] == [0], log_path.read_text()[-3000:]
        assert hub.poll() is None
    finally:
        for s in held:
            s.close()
        await asyncio.to_thread(stop, hub)
