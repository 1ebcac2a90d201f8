"""The hub's upper layer against hostile, idle and malformed peers, on raw sockets.

Each test here failed on the upper layer before issue 18: a 6-byte header made the hub
allocate what it claimed, idle connections counted as associations, a request dribbled a byte
at a time was never timed out, lenient parsing accepted what PS3.8 and PS3.7 forbid.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time

import pytest
from sqlalchemy import func, select

from hub.db.models import HubEvent
from hub.imaging.models import Instance
from hub.testing.dicom import send_files, write_synthetic_series
from hub.testing.dicom_raw import (
    A_ABORT,
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RJ,
    CT_IMAGE,
    EXPLICIT_LE,
    IMPLICIT_LE,
    P_DATA_TF,
    VERIFICATION,
    RawPeer,
    abort_reason,
    associate_rq,
    c_store_rq,
    dimse_rq,
    item,
    large_instance,
    p_data_pdu,
    pdu,
    presentation_context,
    status_of,
)
from hub.testing.fixtures_dicom import HUB_AE, PRACTICE_AE, dicom_port

CONTEXTS = [(1, VERIFICATION, [IMPLICIT_LE]), (3, CT_IMAGE, [EXPLICIT_LE])]


def rss() -> int:
    with open("/proc/self/status") as fp:
        for line in fp:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def rejections(hub, reason: str | None = None) -> list[HubEvent]:
    async with hub.sessionmaker() as s:
        rows = list((await s.execute(
            select(HubEvent).where(HubEvent.kind == "dicom.association_rejected")
        )).scalars())
    return [r for r in rows if reason is None or (r.data or {}).get("reason") == reason]


async def wait_for_rejection(hub, reason: str) -> HubEvent:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if found := await rejections(hub, reason):
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {reason} rejection recorded")


async def stored(hub) -> int:
    async with hub.sessionmaker() as s:
        return await s.scalar(select(func.count()).select_from(Instance))


def associated(port: int, **kw) -> RawPeer:
    peer = RawPeer.connect(port)
    kind, body = peer.associate(HUB_AE, PRACTICE_AE, contexts=CONTEXTS, **kw)
    assert kind == A_ASSOCIATE_AC, (kind, body)
    return peer


# --- memory before an association -----------------------------------------------------------


async def test_an_associate_rq_over_its_cap_is_aborted_before_its_body(dicom_hub):
    port = dicom_port(dicom_hub)

    def claim() -> tuple[int, bytes]:
        with RawPeer.connect(port) as peer:
            peer.send(struct.pack(">BBI", 0x01, 0, 64 * 1024 * 1024 - 1))  # the body never comes
            return peer.read_pdu()

    kind, body = await asyncio.to_thread(claim)
    assert kind == A_ABORT and abort_reason(body) == (2, 6)  # provider, invalid parameter value
    event = await wait_for_rejection(dicom_hub, "associate_rq_size")
    assert "A-ASSOCIATE-RQ of 67108863 bytes, over 65536" in event.message


async def test_headers_that_claim_much_cost_nothing(dicom_hub):
    """Eight sockets sending six bytes each once added 512 MiB to the hub's RSS."""
    port = dicom_port(dicom_hub)
    before = rss()
    peers = [RawPeer.connect(port) for _ in range(8)]
    try:
        for peer in peers:
            peer.send(struct.pack(">BBI", 0x01, 0, 64 * 1024 * 1024))
        for peer in peers:  # the hub answers each at once, without waiting for a body
            kind, _ = await asyncio.to_thread(peer.read_pdu)
            assert kind == A_ABORT
        under = [RawPeer.connect(port) for _ in range(8)]
        for peer in under:  # under the cap: a buffer that grows only with what arrives
            peer.send(struct.pack(">BBI", 0x01, 0, 65536))
        peers += under
        await asyncio.sleep(0.2)  # let the hub's threads read the headers (nothing to poll)
        assert rss() - before < 32 * 1024 * 1024
    finally:
        for peer in peers:
            peer.close()


async def test_a_p_data_pdu_over_the_advertised_maximum_is_aborted(hub_factory, dicom_config_data):
    hub = await hub_factory(dicom_config_data(dicom={"max_pdu": 16384}))
    port = dicom_port(hub)

    def oversize() -> tuple[int, bytes]:
        with associated(port) as peer:
            assert peer.max_pdu == 16384
            peer.send(struct.pack(">BBI", P_DATA_TF, 0, 16385))  # one byte too many
            return peer.read_pdu()

    kind, body = await asyncio.to_thread(oversize)
    assert kind == A_ABORT and abort_reason(body) == (2, 6)
    assert await stored(hub) == 0


# --- ARTIM, idle connections, limits ----------------------------------------------------------


async def test_artim_closes_a_request_dribbled_a_byte_at_a_time(hub_factory, dicom_config_data):
    hub = await hub_factory(dicom_config_data(dicom={"artim_timeout": 1, "network_timeout": 60}))
    port = dicom_port(hub)
    rq = associate_rq(HUB_AE, PRACTICE_AE)

    def dribble() -> bool:
        with RawPeer.connect(port) as peer:
            return peer.dribble(rq, 0.2)  # ~50 s for the whole request; each byte well in time

    assert await asyncio.to_thread(dribble) is False  # closed long before the last byte
    event = await wait_for_rejection(hub, "artim")
    assert "no complete A-ASSOCIATE-RQ" in event.message


async def test_an_idle_association_is_aborted(hub_factory, dicom_config_data):
    hub = await hub_factory(dicom_config_data(dicom={"network_timeout": 0.5}))
    port = dicom_port(hub)

    def idle() -> tuple[int, bytes]:
        with associated(port) as peer:
            return peer.read_pdu()

    kind, _ = await asyncio.to_thread(idle)
    assert kind == A_ABORT


async def test_a_peer_silent_half_way_through_a_pdu_is_aborted(hub_factory, dicom_config_data):
    """A PDU's body is read in one call that waits for all of it; a peer that sends half a
    body and goes quiet still meets the idle timeout, and what it sent is not stored."""
    hub = await hub_factory(dicom_config_data(dicom={"network_timeout": 0.5}))
    port = dicom_port(hub)
    command = p_data_pdu([(3, 0x03, c_store_rq(CT_IMAGE, "1.2.3.9"))])
    data = p_data_pdu([(3, 0x02, bytes(20000))])

    def half() -> tuple[int, bytes]:
        with associated(port) as peer:
            peer.send(command + data[: len(data) // 2])
            return peer.read_pdu()

    kind, _ = await asyncio.to_thread(half)
    assert kind == A_ABORT
    assert await stored(hub) == 0


async def test_idle_connections_do_not_lock_modalities_out(hub_factory, dicom_config_data):
    """Ten connections that never send a byte once made every modality get "local limit
    exceeded": only negotiated associations count against max_associations."""
    hub = await hub_factory(dicom_config_data(dicom={"max_associations": 2}))
    port = dicom_port(hub)
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(10)]
    try:
        paths = write_synthetic_series(hub.data_dir / "s", 2)
        results = await asyncio.to_thread(
            send_files, "127.0.0.1", port, paths, called_ae=HUB_AE, calling_ae=PRACTICE_AE
        )
        assert [r.status for r in results] == [0, 0]
    finally:
        for sock in idle:
            sock.close()


async def test_connections_still_negotiating_have_their_own_bound(hub_factory, dicom_config_data):
    hub = await hub_factory(dicom_config_data(dicom={"max_negotiating": 3}))
    port = dicom_port(hub)
    threads_before = threading.active_count()
    idle = [RawPeer.connect(port) for _ in range(3)]
    try:
        deadline = time.monotonic() + 20
        while True:  # the fourth is refused once the hub holds the three
            with RawPeer.connect(port) as extra:
                extra.send(associate_rq(HUB_AE, PRACTICE_AE))
                kind, body = await asyncio.to_thread(extra.read_pdu)
            if kind == A_ASSOCIATE_RJ or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert kind == A_ASSOCIATE_RJ and tuple(body[1:4]) == (0x02, 0x03, 0x02), body.hex()
        # A connection held is a thread; one turned away is not.
        assert threading.active_count() - threads_before <= 3 + 2
        event = await wait_for_rejection(hub, "max_negotiating")
        assert event.message.startswith("rejected: 3 connections from callers still negotiating")
    finally:
        for peer in idle:
            peer.close()


async def test_a_full_house_is_refused_and_recorded(hub_factory, dicom_config_data):
    hub = await hub_factory(dicom_config_data(dicom={"max_associations": 1}))
    port = dicom_port(hub)

    def crowd() -> tuple[int, bytes]:
        with associated(port):
            with RawPeer.connect(port) as second:
                return second.associate(HUB_AE, PRACTICE_AE)

    kind, body = await asyncio.to_thread(crowd)
    assert kind == A_ASSOCIATE_RJ and tuple(body[1:4]) == (0x02, 0x03, 0x02)
    event = await wait_for_rejection(hub, "max_associations")
    assert event.data["calling_ae"] == PRACTICE_AE and event.data["limit"] == 1


# --- strict A-ASSOCIATE-RQ ------------------------------------------------------------------

_APP = item(0x10, b"1.2.840.10008.3.1.1.1")
_USER = item(0x50, item(0x51, struct.pack(">I", 16384)))
_PC = presentation_context(1, VERIFICATION, [IMPLICIT_LE])


@pytest.mark.parametrize(("kw", "expected"), [
    ({"protocol_version": 2}, (A_ASSOCIATE_RJ, (0x01, 0x02, 0x02))),
    ({"application_context": "1.2.3.4"}, (A_ASSOCIATE_RJ, (0x01, 0x01, 0x02))),
    ({"contexts": [(2, VERIFICATION, [IMPLICIT_LE])]}, (A_ABORT, (2, 6))),
    ({"contexts": [(1, VERIFICATION, [IMPLICIT_LE]), (1, CT_IMAGE, [IMPLICIT_LE])]},
     (A_ABORT, (2, 6))),
    ({"items": _APP + _PC[:-3] + _USER}, (A_ABORT, (2, 6))),  # a sub-item overruns its item
    ({"items": _APP + _PC + _USER + b"\x50\x00\xff"}, (A_ABORT, (2, 6))),  # a torn item
    ({"items": _PC + _USER}, (A_ABORT, (2, 6))),  # no application context
    ({"items": _APP + _USER}, (A_ABORT, (2, 6))),  # no presentation context
    ({"items": _APP + item(0x20, bytes([1, 0, 0, 0]) + item(0x30, b"1.2.840.10008.1.1"))
      + _USER}, (A_ABORT, (2, 6))),  # no transfer syntax
], ids=["version", "app-context", "even-id", "duplicate-id", "overrun", "torn", "no-app",
        "no-pc", "no-ts"])
async def test_a_malformed_or_foreign_request_is_refused(dicom_hub, kw, expected):
    port = dicom_port(dicom_hub)

    def ask() -> tuple[int, bytes]:
        with RawPeer.connect(port) as peer:
            return peer.associate(HUB_AE, PRACTICE_AE, **kw)

    kind, body = await asyncio.to_thread(ask)
    got = (kind, tuple(body[1:4]) if kind == A_ASSOCIATE_RJ else abort_reason(body))
    assert got == expected


# --- strict DIMSE ---------------------------------------------------------------------------


async def test_a_data_set_before_the_command_is_complete_aborts(dicom_hub):
    port = dicom_port(dicom_hub)
    sop_class, sop_uid, head, pixels = large_instance(64)
    data = head + b"".join(pixels)
    # Everything a C-STORE needs is in the first fragment; only Move Originator Message ID,
    # last, is held back: a lenient reader would pair the data set with that first fragment.
    command = c_store_rq(sop_class, sop_uid, extra={0x00001031: struct.pack("<H", 1)})
    split = len(command) - 10

    def interleave() -> tuple[int, bytes]:
        with associated(port) as peer:
            peer.send(p_data_pdu([(3, 0x01, command[:split])]))  # not the command's last
            peer.send(p_data_pdu([(3, 0x02, data)]))  # the whole data set
            peer.send(p_data_pdu([(3, 0x03, command[split:])]))
            return peer.read_pdu()

    kind, body = await asyncio.to_thread(interleave)
    assert kind == A_ABORT and abort_reason(body)[0] == 2
    assert await stored(dicom_hub) == 0


async def test_a_c_store_without_message_id_is_aborted_and_not_stored(dicom_hub):
    port = dicom_port(dicom_hub)
    sop_class, sop_uid, head, pixels = large_instance(64)

    def send() -> tuple[int, bytes]:
        with associated(port) as peer:
            command = c_store_rq(sop_class, sop_uid, drop=[0x00000110])
            peer.send(p_data_pdu([(3, 0x03, command)]))
            peer.send(p_data_pdu([(3, 0x02, head + b"".join(pixels))]))
            return peer.read_pdu()

    kind, _ = await asyncio.to_thread(send)
    assert kind == A_ABORT
    assert await stored(dicom_hub) == 0


async def test_a_c_store_lacking_its_instance_uid_fails_and_the_association_goes_on(dicom_hub):
    port = dicom_port(dicom_hub)
    sop_class, sop_uid, head, pixels = large_instance(64)
    data = head + b"".join(pixels)

    def send() -> tuple[int, int]:
        with associated(port) as peer:
            command = c_store_rq(sop_class, sop_uid, drop=[0x00001000])
            peer.send(p_data_pdu([(3, 0x03, command)]))
            peer.send(p_data_pdu([(3, 0x02, data)]))
            refused = status_of(peer.response())
            accepted = peer.c_store(3, sop_class, sop_uid, data, message_id=2)
            peer.release()
            return refused, accepted

    refused, accepted = await asyncio.to_thread(send)
    assert refused == 0xC000 and accepted == 0x0000
    assert await stored(dicom_hub) == 1


async def test_an_unsupported_dimse_is_answered_with_a_failure_not_an_abort(dicom_hub):
    port = dicom_port(dicom_hub)

    def find_then_echo() -> tuple[dict, int]:
        with associated(port) as peer:
            peer.send(p_data_pdu([(1, 0x03, dimse_rq(0x0020, VERIFICATION, 7))]))  # C-FIND-RQ
            find = peer.response()
            peer.send(p_data_pdu([(1, 0x03, dimse_rq(0x0030, VERIFICATION, 8))]))  # C-ECHO-RQ
            echo = status_of(peer.response())
            peer.release()
            return find, echo

    find, echo = await asyncio.to_thread(find_then_echo)
    assert struct.unpack("<H", find[0x00000100])[0] == 0x8020
    assert struct.unpack("<H", find[0x00000120])[0] == 7
    assert status_of(find) == 0x0211
    assert echo == 0x0000


async def test_unknown_and_unexpected_pdus_abort_with_their_reasons(dicom_hub):
    port = dicom_port(dicom_hub)

    def send(data: bytes, associate: bool) -> tuple[int, bytes]:
        peer = associated(port) if associate else RawPeer.connect(port)
        with peer:
            peer.send(data)
            return peer.read_pdu()

    kind, body = await asyncio.to_thread(send, pdu(0x09, bytes(4)), True)
    assert kind == A_ABORT and abort_reason(body) == (2, 1)  # unrecognised PDU
    kind, body = await asyncio.to_thread(send, pdu(0x02, bytes(4)), True)
    assert kind == A_ABORT and abort_reason(body) == (2, 2)  # unexpected PDU
    kind, body = await asyncio.to_thread(send, p_data_pdu([(1, 3, b"")]), False)
    assert kind == A_ABORT and abort_reason(body) == (2, 2)  # P-DATA before any association


async def test_connections_still_negotiating_hold_no_thread(hub_factory, dicom_config_data):
    """Two hundred idle sockets once made 205 threads: now they wait on one selector."""
    from plugins.dicom.plugin import receiver_of

    hub = await hub_factory(dicom_config_data(dicom={"max_negotiating": 400}))
    port = dicom_port(hub)
    server = receiver_of(hub).engine.server
    threads_before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(300)]
    try:
        for sock in idle[::2]:  # half of them start a request and stop
            sock.sendall(associate_rq(HUB_AE, PRACTICE_AE)[:40])
        deadline = time.monotonic() + 20
        while server.negotiating < 300:
            assert time.monotonic() < deadline, server.negotiating
            await asyncio.sleep(0.05)
        assert threading.active_count() - threads_before <= 2
        paths = write_synthetic_series(hub.data_dir / "s", 2)
        results = await asyncio.to_thread(
            send_files, "127.0.0.1", port, paths, called_ae=HUB_AE, calling_ae=PRACTICE_AE
        )
        assert [r.status for r in results] == [0, 0]
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 20
    while server.negotiating:  # every closed connection is let go of
        assert time.monotonic() < deadline, server.negotiating
        await asyncio.sleep(0.05)


async def test_a_flood_of_refusals_is_folded_into_few_events(dicom_hub):
    from plugins.dicom.limits import LimitEvents
    from plugins.dicom.plugin import receiver_of

    limits = LimitEvents(receiver_of(dicom_hub), interval=2.0)
    started = time.monotonic()
    for n in range(20):
        limits.refused("max_negotiating", f"refusal {n}", {"address": "192.0.2.1"})
    assert time.monotonic() - started < 2.0  # all within one interval (else fewer fold)
    await wait_for_rejection(dicom_hub, "max_negotiating")
    deadline = time.monotonic() + 20
    while time.monotonic() - started < 2.1:  # the interval passes; nothing to poll for
        await asyncio.sleep(0.05)
    limits.refused("max_negotiating", "refusal 20", {"address": "192.0.2.1"})
    while len(events := await rejections(dicom_hub, "max_negotiating")) < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    events.sort(key=lambda e: e.id)
    assert [e.message for e in events] == [
        "rejected: refusal 0",
        "rejected: refusal 20 (and 19 more like it since the last such event)",
    ]
    assert events[1].data["folded"] == 19


async def test_an_association_silent_between_messages_gives_up_its_thread(
    hub_factory, dicom_config_data
):
    from plugins.dicom.association import PARK_AFTER

    hub = await hub_factory(dicom_config_data(dicom={"network_timeout": 60}))
    port = dicom_port(hub)
    sop_class, sop_uid, head, pixels = large_instance(64)
    data = head + b"".join(pixels)

    def association_threads() -> int:
        return sum(t.name == "vethub-dicom-assoc" for t in threading.enumerate())

    peer = await asyncio.to_thread(associated, port)
    try:
        peer.send(p_data_pdu([(1, 0x03, dimse_rq(0x0030, VERIFICATION, 1))]))
        assert status_of(await asyncio.to_thread(peer.response)) == 0
        assert association_threads() == 1
        # Silent past PARK_AFTER: the association's thread ends, the association stays.
        deadline = time.monotonic() + PARK_AFTER + 20
        while association_threads():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert receiver_of_hub(hub).engine.server.active == 1
        status = await asyncio.to_thread(peer.c_store, 3, sop_class, sop_uid, data, 2)
        assert status == 0  # taken up again by a new thread as soon as the peer sent
        assert await asyncio.to_thread(peer.release) == 0x06  # A-RELEASE-RP
    finally:
        peer.close()
    assert await stored(hub) == 1


async def test_a_parked_association_is_aborted_at_its_idle_timeout(hub_factory, dicom_config_data):
    from plugins.dicom.association import PARK_AFTER

    hub = await hub_factory(dicom_config_data(dicom={"network_timeout": PARK_AFTER + 1}))
    port = dicom_port(hub)

    def idle() -> tuple[int, bytes]:
        with associated(port) as peer:
            return peer.read_pdu()

    kind, body = await asyncio.to_thread(idle)
    assert kind == A_ABORT and abort_reason(body) == (2, 0)
    server = receiver_of_hub(hub).engine.server
    deadline = time.monotonic() + 20
    while server.active:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


def receiver_of_hub(hub):
    from plugins.dicom.plugin import receiver_of

    return receiver_of(hub)
