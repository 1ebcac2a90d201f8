"""A tiny authoritative DNS server for tests: answers TXT queries over UDP from a dict, NXDOMAIN
for anything else, and records every name it was asked. Runs on the test's event loop, port 0."""

from __future__ import annotations

import asyncio
from typing import Any

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


class TxtServer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.records: dict[str, str] = {}
        self.asked: list[str] = []
        self.transport: asyncio.DatagramTransport | None = None

    @property
    def address(self) -> str:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return f"{host}:{port}"

    def publish(self, name: str, text: str) -> None:
        self.records[name.lower().rstrip(".") + "."] = text

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text().lower()
        self.asked.append(name)
        text = self.records.get(name)
        if text is not None and question.rdtype == dns.rdatatype.TXT:
            # one TXT record of <=255-byte strings, as a 2048-bit key's record must be published
            chunks = " ".join(f'"{text[i:i + 255]}"' for i in range(0, len(text), 255))
            response.answer.append(dns.rrset.from_text(question.name, 60, "IN", "TXT", chunks))
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


async def start_txt_server() -> TxtServer:
    loop = asyncio.get_running_loop()
    _, server = await loop.create_datagram_endpoint(TxtServer, local_addr=("127.0.0.1", 0))
    return server
