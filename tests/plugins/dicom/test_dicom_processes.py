"""``[dicom] processes = 2``: a worker process beside the hub's receiver, on one shared socket.

The hub runs in the test's process; its worker is a real process (``plugins.dicom.worker``),
killed or stopped by the hub, and killed by the test where that is the point.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
from sqlalchemy import select

from hub.config import ConfigError, load_config
from hub.imaging.models import Instance
from hub.plugins import PluginError
from hub.testing.dicom import dataset_bytes, send_files, write_synthetic_series
from hub.testing.fixtures_dicom import HUB_AE, PRACTICE_AE, dicom_port
from plugins.dicom.plugin import processes_of, receiver_of
from plugins.dicom.receiver import storage_root

from .daemon import children

pytestmark = pytest.mark.slow


@pytest.fixture
async def two_processes(hub_factory, write_config, dicom_config_data):
    config = load_config(write_config(dicom_config_data(dicom={"processes": 2})))
    hub = await hub_factory(config=config)
    processes = processes_of(hub)
    assert processes is not None and len(processes.procs) == 1
    return hub, processes


async def _rows(hub) -> dict[str, str]:
    async with hub.sessionmaker() as s:
        return {uid: path for uid, path in await s.execute(
            select(Instance.sop_instance_uid, Instance.path))}


async def _send(hub, paths, associations: int):
    return await asyncio.to_thread(
        send_files, "127.0.0.1", dicom_port(hub), paths, called_ae=HUB_AE,
        calling_ae=PRACTICE_AE, associations=associations,
    )


async def _wait_for(condition, what: str, deadline_s: float = 60) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def _send_rounds(hub, processes, folder, rounds: int = 5) -> int:
    """Send 40 new instances over 4 associations per round until the worker has taken some.

    Which process accepts a connection is the kernel's choice: on a busy machine the hub's own
    process may take all four of one round, so a few rounds are allowed (each must succeed)."""
    sent = 0
    for n in range(rounds):
        paths = write_synthetic_series(folder / f"round-{n}", 40)
        results = await _send(hub, paths, associations=4)
        assert [r.status for r in results] == [0] * 40
        sent += 40
        if processes.relay.rows > 0:
            break
    return sent


async def test_associations_go_round_the_processes(two_processes, tmp_path):
    hub, processes = two_processes
    sent = await _send_rounds(hub, processes, tmp_path)
    assert len(await _rows(hub)) == sent
    receiver = receiver_of(hub)
    assert receiver is not None
    # Both processes took associations; every row was committed by the hub's committer.
    assert 0 < processes.relay.rows < sent
    assert receiver.committer.committed == sent


async def test_a_killed_worker_is_replaced(two_processes, tmp_path):
    hub, processes = two_processes
    dead = processes.procs[0]
    os.kill(dead.pid, signal.SIGKILL)
    await _wait_for(lambda: processes.restarts == 1, "the worker to be started again")
    assert processes.procs[0].pid != dead.pid and dead.returncode == -signal.SIGKILL
    await _send_rounds(hub, processes, tmp_path)
    assert processes.relay.rows > 0  # the new worker receives


async def test_killing_the_worker_mid_send_loses_nothing_acknowledged(two_processes, tmp_path):
    """Every instance that got Success is filed and whole; the associations the worker had
    end without a Success for what it had not committed; the hub keeps receiving."""
    hub, processes = two_processes
    paths = write_synthetic_series(tmp_path / "series", 200, rows=64, columns=64)
    sending = asyncio.create_task(_send(hub, paths, associations=2))
    await _wait_for(lambda: processes.relay.rows >= 10, "the worker's first rows")
    os.kill(processes.procs[0].pid, signal.SIGKILL)
    results = await sending
    acknowledged = [r for r in results if r.status == 0]
    assert 10 <= len(acknowledged) < 200  # the parent's association went on to the end
    rows = await _rows(hub)
    root = storage_root(hub, receiver_of(hub).config)
    for result in acknowledged:
        assert result.sop_instance_uid in rows, f"{result.path.name} acknowledged, not filed"
        assert dataset_bytes(root / rows[result.sop_instance_uid]) == dataset_bytes(result.path)
    # A re-send of what failed completes once the worker is back, without duplicates.
    await _wait_for(lambda: processes.restarts == 1, "the worker to be started again")
    missing = [r.path for r in results if r.status != 0]
    again = await _send(hub, missing, associations=2)
    assert {r.status for r in again} == {0}
    assert len(await _rows(hub)) == 200


async def test_a_worker_that_cannot_start_stops_the_hub_starting(
    hub_factory, write_config, dicom_config_data
):
    path = write_config(dicom_config_data(dicom={"processes": 2}))
    config = load_config(path)
    path.unlink()  # the hub has read it; its worker cannot
    children_before = children(os.getpid())
    with pytest.raises(PluginError, match="WorkerStartError.*exited with code 2 before it was"):
        await hub_factory(config=config)
    assert children(os.getpid()) == children_before  # the failed worker was reaped, none left behind



async def test_stopping_the_hub_stops_its_worker(hub_factory, write_config, dicom_config_data):
    config = load_config(write_config(dicom_config_data(dicom={"processes": 2})))
    hub = await hub_factory(config=config)
    processes = processes_of(hub)
    assert processes is not None
    worker, relay_dir = processes.procs[0], processes.relay.path.parent
    await hub.stop()
    assert worker.returncode == 0  # it stopped on SIGTERM, cleanly, not killed
    assert not relay_dir.exists()


def test_several_processes_need_the_hubs_engine(write_config, dicom_config_data):
    path = write_config(dicom_config_data(dicom={"processes": 2, "engine": "pynetdicom"}))
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    message = str(refused.value)
    assert str(path) in message and "dicom" in message and 'engine = "hub"' in message


async def test_large_instances_are_streamed_in_either_process(two_processes):
    """A data set over the streaming threshold is written while it arrives in the worker too,
    and its row goes through the hub's committer like any other."""
    from concurrent.futures import ThreadPoolExecutor

    from hub.testing.dicom_raw import CT_IMAGE, EXPLICIT_LE, RawPeer, large_instance
    from plugins.dicom.streaming import STREAM_AFTER

    hub, processes = two_processes
    port = dicom_port(hub)

    def send_one(_: int) -> int:
        sop_class, uid, head, pixels = large_instance(STREAM_AFTER + 4096)
        with RawPeer.connect(port, timeout=120) as peer:
            peer.associate(HUB_AE, PRACTICE_AE, contexts=[(1, CT_IMAGE, [EXPLICIT_LE])],
                           max_pdu=131072)
            status = peer.c_store(1, sop_class, uid, [head, *pixels])
            peer.release()
        return status

    with ThreadPoolExecutor(4) as pool:
        statuses = await asyncio.to_thread(lambda: list(pool.map(send_one, range(4))))
    assert statuses == [0] * 4
    rows = await _rows(hub)
    assert len(rows) == 4
    root = storage_root(hub, receiver_of(hub).config)
    assert all((root / path).stat().st_size > STREAM_AFTER for path in rows.values())
    assert processes.relay.rows > 0  # the worker streamed some of them
