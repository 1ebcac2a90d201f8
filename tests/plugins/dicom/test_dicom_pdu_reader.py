"""PduReader against every way a byte stream can be cut into socket reads."""

from __future__ import annotations

import random
import struct

import pytest

from plugins.dicom.pdu_reader import DIRECT, MAX_PDU, PduReader, PduTooLong


def _pdu(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBI", kind, 0, len(body)) + body


def _feed(reader: PduReader, data: bytes, rng: random.Random) -> None:
    """What the transport does: ask for a buffer, receive up to its size into it, report."""
    pos = 0
    while pos < len(data):
        buf = reader.get_buffer(-1)
        n = min(len(buf), len(data) - pos, rng.choice([1, 5, 6, 7, 100, 4096, 70_000, 1 << 20]))
        buf[:n] = data[pos : pos + n]
        reader.buffer_updated(n)
        pos += n


@pytest.mark.parametrize("seed", range(20))
async def test_pdus_come_out_whole_however_the_stream_is_cut(seed):
    rng = random.Random(seed)
    sent = [
        (rng.choice([1, 2, 4, 5, 7]), rng.randbytes(rng.choice([0, 4, 10, DIRECT - 1, DIRECT, 200_000])))
        for _ in range(12)
    ]
    reader = PduReader(lambda _conn: None)
    _feed(reader, b"".join(_pdu(kind, body) for kind, body in sent), rng)
    got = [await reader.read_pdu() for _ in sent]
    assert [(kind, bytes(body)) for kind, body in got] == sent


async def test_a_pdu_longer_than_the_limit_is_refused_before_it_is_read():
    reader = PduReader(lambda _conn: None)
    _feed(reader, _pdu(4, b"x" * 10) + struct.pack(">BBI", 4, 0, MAX_PDU + 1), random.Random(1))
    assert (await reader.read_pdu())[1] == b"x" * 10
    with pytest.raises(PduTooLong):
        await reader.read_pdu()


async def test_the_end_of_the_stream_ends_reading_after_the_pdus_already_whole():
    reader = PduReader(lambda _conn: None)
    _feed(reader, _pdu(5, b"\x00" * 4) + _pdu(4, b"abc")[:5], random.Random(2))
    reader.eof_received()
    assert (await reader.read_pdu())[0] == 5
    with pytest.raises(EOFError):  # asyncio.IncompleteReadError
        await reader.read_pdu()
