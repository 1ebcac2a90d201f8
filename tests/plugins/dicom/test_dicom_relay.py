"""The commit relay: a worker process's rows filed by the hub process's one committer."""

from __future__ import annotations

import asyncio
import marshal
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import select

from hub.imaging.models import Instance
from hub.imaging.service import ImagingError
from hub.testing.dicom import send_files, write_synthetic_series
from hub.testing.fixtures_dicom import HUB_AE, PRACTICE_AE
from plugins.dicom.receiver import DicomReceiver, storage_root
from plugins.dicom.relay import RelayCommitter, RelayError, RelayServer

from .rows import received_item, second_practice


@pytest.fixture
async def relayed(committed):
    """(hub, relay server, practice id, committed SOP Instance UIDs), on a running committer."""
    hub, committer, practice_id, uids = committed
    relay = RelayServer(committer)
    await asyncio.to_thread(relay.start)
    yield hub, relay, practice_id, uids
    await asyncio.to_thread(relay.stop)


def _raw(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(str(path))
    return sock


def _framed(payload: bytes) -> bytes:
    return struct.pack("!I", len(payload)) + payload


def _closed_by_peer(sock: socket.socket) -> bool:
    return sock.recv(1) == b""


async def test_rows_from_many_threads_are_committed_together(relayed):
    _hub, relay, practice_id, uids = relayed
    client = RelayCommitter(relay.path)

    def send(thread: int) -> list:
        return [client.submit(received_item(practice_id, f"1.{thread}.{n}")) for n in range(10)]

    with ThreadPoolExecutor(4) as pool:
        outcomes = [o for part in await asyncio.gather(*(
            asyncio.get_running_loop().run_in_executor(pool, send, t) for t in range(4)
        )) for o in part]
    assert all(o.created for o in outcomes) and len({o.study_id for o in outcomes}) == 1
    assert await uids() == {f"1.{t}.{n}" for t in range(4) for n in range(10)}
    assert relay.rows == 40 and relay.committer.batches < 40  # the threads shared commits
    # A re-sent instance: the same row, not a second one.
    again = await asyncio.to_thread(client.submit, received_item(practice_id, "1.0.0"))
    assert not again.created and again.instance_id == outcomes[0].instance_id
    client.stop()


async def test_a_refused_row_comes_back_with_its_status(relayed):
    hub, relay, practice_id, uids = relayed
    other_id = await second_practice(hub)
    client = RelayCommitter(relay.path)
    await asyncio.to_thread(client.submit, received_item(other_id, "9.1", study="9.2"))
    with pytest.raises(ImagingError, match="another practice") as refused:
        await asyncio.to_thread(client.submit, received_item(practice_id, "9.1"))
    assert refused.value.status == 0xA900
    # the connection is still good for the next instance
    assert (await asyncio.to_thread(client.submit, received_item(practice_id, "1.1"))).created
    assert await uids() == {"9.1", "1.1"}
    client.stop()


async def test_nonsense_on_the_socket_is_refused_and_the_relay_keeps_serving(relayed):
    _hub, relay, practice_id, uids = relayed

    def nonsense() -> list:
        answers = []
        with _raw(relay.path) as sock:  # a tuple that is not a row: an error answer
            sock.sendall(_framed(marshal.dumps(("too", "few"))))
            (length,) = struct.unpack("!I", sock.recv(4, socket.MSG_WAITALL))
            answers.append(marshal.loads(sock.recv(length, socket.MSG_WAITALL)))
        for junk, cut_short in (
            (struct.pack("!I", 1 << 31), False),  # a length no row has
            (_framed(b"\xff\xfe\xfd"), False),  # not marshal data
            (struct.pack("!I", 10) + b"abc", True),  # cut short, then no more
            (_framed(marshal.dumps([1, 2])), False),  # not a tuple
        ):
            with _raw(relay.path) as sock:
                sock.sendall(junk)
                if cut_short:
                    sock.shutdown(socket.SHUT_WR)
                answers.append(_closed_by_peer(sock))
        return answers

    answers = await asyncio.to_thread(nonsense)
    assert answers[0][0] == "error" and "not a row" in answers[0][2]
    assert answers[1:] == [True, True, True, True]  # each connection closed, nothing filed
    assert relay.rows == 0 and await uids() == set()
    client = RelayCommitter(relay.path)
    assert (await asyncio.to_thread(client.submit, received_item(practice_id, "1.1"))).created
    client.stop()


async def test_no_hub_process_is_a_relay_error(tmp_path):
    client = RelayCommitter(tmp_path / "nobody.sock")
    with pytest.raises(RelayError, match="cannot reach the hub process"):
        client.submit(received_item(1, "1.1"))


async def test_a_silent_hub_process_times_out(tmp_path):
    """A peer that accepts the row and never answers: the worker gives up after its timeout,
    and the next row gets a fresh connection."""
    path = tmp_path / "silent.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    held: list[socket.socket] = []
    done = threading.Event()

    def hold() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    client = RelayCommitter(path)
    try:
        started = time.monotonic()
        with pytest.raises(RelayError, match="did not answer"):
            await asyncio.to_thread(client.submit, received_item(1, "1.1"), 0.5)
        assert time.monotonic() - started < 10
        with pytest.raises(RelayError):
            await asyncio.to_thread(client.submit, received_item(1, "1.2"), 0.5)
        assert len(held) == 2  # the timed-out connection was not reused
    finally:
        done.set()
        server.shutdown(socket.SHUT_RDWR)
        server.close()
        holder.join(10)
        for conn in held:
            conn.close()


async def test_a_worker_whose_hub_process_is_gone_answers_a700(
    hub_factory, dicom_config_data, tmp_path
):
    """A receiver relaying to nobody: every C-STORE fails with 0xA700, no row is made."""
    data = dicom_config_data()
    data["dicom"]["enabled"] = False
    hub = await hub_factory(data)
    config = hub.config.section("dicom").model_copy(update={"enabled": True})
    receiver = DicomReceiver(hub, config, committer=RelayCommitter(tmp_path / "gone.sock"))
    await receiver.start()
    try:
        paths = write_synthetic_series(tmp_path / "series", 3, rows=16, columns=16)
        results = await asyncio.to_thread(
            send_files, "127.0.0.1", receiver.port, paths, called_ae=HUB_AE,
            calling_ae=PRACTICE_AE,
        )
    finally:
        await receiver.stop()
    assert [r.status for r in results] == [0xA700] * 3
    async with hub.sessionmaker() as s:
        assert (await s.execute(select(Instance))).first() is None
    assert storage_root(hub, config).is_dir()
