"""Fuzzing the upper layer's parsers (A-ASSOCIATE-RQ, P-DATA-TF) with hypothesis, bounded
in examples: no crash (only the protocol's own refusals), no hang, no allocation over the cap.
"""

from __future__ import annotations

import asyncio
import struct
import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.testing.dicom import send_files, write_synthetic_series
from hub.testing.dicom_raw import (
    CT_IMAGE,
    EXPLICIT_LE,
    VERIFICATION,
    RawPeer,
    associate_rq,
    c_store_rq,
    p_data_pdu,
)
from hub.testing.fixtures_dicom import HUB_AE, PRACTICE_AE, dicom_port
from plugins.dicom.ul import (
    AssociateRefused,
    AssociateRQ,
    Message,
    ProtocolError,
    parse_associate_rq,
)

VALID_RQ = associate_rq(
    HUB_AE, PRACTICE_AE, [(1, VERIFICATION, ["1.2.840.10008.1.2"]), (3, CT_IMAGE, [EXPLICIT_LE])]
)[6:]


@st.composite
def mutated(draw, seed: bytes) -> bytes:
    """``seed`` with a few bytes overwritten, inserted or cut: close enough to valid to get
    past the first checks."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["set", "insert", "cut"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[at : at + draw(st.integers(1, 8))]
    return bytes(data)


@settings(max_examples=800, deadline=None)
@given(st.one_of(st.binary(max_size=600), mutated(VALID_RQ)))
def test_associate_rq_parser(body: bytes) -> None:
    try:
        rq = parse_associate_rq(body)
    except (ProtocolError, AssociateRefused):
        return
    assert isinstance(rq, AssociateRQ) and rq.contexts
    assert all(cid % 2 for cid, _, _ in rq.contexts)


def _pdv(cid: int, control: int, value: bytes) -> bytes:
    return struct.pack(">I", len(value) + 2) + bytes([cid, control]) + value


VALID_STORE = (
    _pdv(3, 0x03, c_store_rq(CT_IMAGE, "1.2.3.4")) + _pdv(3, 0x02, b"\x08\x00\x16\x00" * 8)
)


@settings(max_examples=800, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=300), mutated(VALID_STORE)), min_size=1, max_size=4))
def test_p_data_parser(bodies: list[bytes]) -> None:
    message = Message()
    for body in bodies:
        try:
            done = message.add(bytearray(body), {1, 3})
        except ProtocolError:
            return
        # What is held is views of what arrived, never more.
        assert message.held <= sum(len(b) for b in bodies)
        if done:
            message = Message()


@pytest.mark.slow
async def test_the_running_hub_under_fuzzed_requests(hub_factory, dicom_config_data, tmp_path):
    """Fuzzed first PDUs against a live hub (tracemalloc sees every thread's allocations)."""
    hub = await hub_factory(
        dicom_config_data(dicom={"artim_timeout": 0.5, "network_timeout": 0.5})
    )
    port = dicom_port(hub)
    cap = 65536

    @settings(max_examples=50, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(
        kind=st.integers(0, 9), length=st.integers(0, 2**32 - 1),
        body=st.one_of(st.binary(max_size=2048), mutated(VALID_RQ)),
        then=st.one_of(st.none(), st.binary(max_size=512)),
    )
    def attack(kind: int, length: int, body: bytes, then: bytes | None) -> None:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        started = time.monotonic()
        with RawPeer.connect(port, timeout=10) as peer:
            try:
                peer.send(struct.pack(">BBI", kind, 0, length) + body)
                if then is not None:
                    peer.send(p_data_pdu([(1, 0x03, then)]))
            except OSError:
                pass  # the hub already hung up
            assert peer.closed(10) or _answered(peer)
        assert time.monotonic() - started < 12  # no hang: ARTIM or idle timeout at the latest
        peak = tracemalloc.get_traced_memory()[1]
        assert peak - base < 4 * cap + (1 << 20), f"{(peak - base) >> 10} KiB held"

    tracemalloc.start()
    try:
        await asyncio.to_thread(attack)
    finally:
        tracemalloc.stop()
    good = write_synthetic_series(tmp_path / "good", 1)
    results = await asyncio.to_thread(
        send_files, "127.0.0.1", port, good, called_ae=HUB_AE, calling_ae=PRACTICE_AE
    )
    assert [r.status for r in results] == [0]


def _answered(peer: RawPeer) -> bool:
    """An associated peer (the fuzz happened to send a valid request) releases politely."""
    try:
        return peer.release() in (0x06, 0x07)
    except OSError:
        return True
