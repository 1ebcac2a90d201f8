"""Beyond a practice's LAN: calling AEs bound to source addresses or networks, and DICOM over
TLS on a second port (mutual TLS optional)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import func, select

from hub.db.models import CallingAE, HubEvent
from hub.imaging.callers import address_allowed
from hub.imaging.models import Instance
from hub.testing.dicom import write_synthetic_series
from hub.testing.dicom_raw import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, RawPeer
from hub.testing.fixtures_dicom import HUB_AE, PRACTICE_AE, dicom_port
from plugins.dicom.plugin import receiver_of

needs_dcmtk = pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk not installed")
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")


async def bind(hub, addresses: list[str]) -> None:
    async with hub.transaction() as s:
        ae = (await s.execute(select(CallingAE).where(CallingAE.ae_title == PRACTICE_AE))).scalar_one()
        ae.source_addresses = addresses


def ask(port: int, source: str) -> tuple[int, bytes]:
    with RawPeer.connect(port, source=source) as peer:
        return peer.associate(HUB_AE, PRACTICE_AE)


def test_addresses_and_networks_match():
    assert address_allowed("10.1.2.3", ["10.1.0.0/16"])
    assert address_allowed("10.1.2.3", ["192.0.2.1", "10.1.2.3"])
    assert address_allowed("::ffff:10.1.2.3", ["10.1.2.0/24"])  # IPv4 seen on a v6 socket
    assert address_allowed("2001:db8::5", ["2001:db8::/64"])
    assert not address_allowed("10.2.0.1", ["10.1.0.0/16"])
    assert not address_allowed("10.1.2.3", ["not an address", ""])
    assert not address_allowed("garbage", ["0.0.0.0/0"])


async def test_a_calling_ae_bound_to_a_network_is_refused_from_elsewhere(dicom_hub):
    port = dicom_port(dicom_hub)
    await bind(dicom_hub, ["127.0.0.1/32", "10.0.0.0/8"])
    kind, body = await asyncio.to_thread(ask, port, "127.0.0.2")
    assert kind == A_ASSOCIATE_RJ and tuple(body[1:4]) == (0x01, 0x01, 0x03)
    async with dicom_hub.sessionmaker() as s:
        (event,) = (await s.execute(
            select(HubEvent).where(HubEvent.kind == "dicom.association_rejected")
        )).scalars()
    assert event.message == (
        f"rejected: calling AE {PRACTICE_AE} not allowed from 127.0.0.2 "
        "(registered for 127.0.0.1/32, 10.0.0.0/8)"
    )
    assert event.data["reason"] == "calling_ae" and event.data["address"] == "127.0.0.2"
    kind, _ = await asyncio.to_thread(ask, port, "127.0.0.1")
    assert kind == A_ASSOCIATE_AC
    await bind(dicom_hub, ["127.0.0.0/30"])  # the network now takes 127.0.0.2 in
    kind, _ = await asyncio.to_thread(ask, port, "127.0.0.2")
    assert kind == A_ASSOCIATE_AC


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture
def certificates(tmp_path: Path) -> Path:
    """A CA, the hub's certificate for 127.0.0.1 and a client certificate, both signed by it."""
    folder = tmp_path / "pki"
    folder.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.pem", "-days", "2", "-subj", "/CN=VetHub test CA", cwd=folder)
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("hub", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                 f"{name}.csr", "-subj", f"/CN={name}", cwd=folder)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", "san.ext",
                 cwd=folder)
    return folder


@pytest.fixture
async def tls_hub(hub_factory, dicom_config_data, certificates):
    return await hub_factory(dicom_config_data(dicom={
        "tls_port": 0,
        "tls_certificate": str(certificates / "hub.pem"),
        "tls_private_key": str(certificates / "hub.key"),
        "tls_client_ca": str(certificates / "ca.pem"),
    }))


def storescu_tls(port: int, pki: Path, paths: list[Path], *, client_cert: bool = True):
    cmd = ["storescu", "-aet", PRACTICE_AE, "-aec", HUB_AE, "+cf", str(pki / "ca.pem")]
    if client_cert:
        cmd[1:1] = ["+tls", str(pki / "client.key"), str(pki / "client.pem")]
    else:
        cmd[1:1] = ["+tla"]  # TLS, anonymous: no certificate of its own
    cmd += ["127.0.0.1", str(port), *map(str, paths)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


async def _count(hub) -> int:
    async with hub.sessionmaker() as s:
        return await s.scalar(select(func.count()).select_from(Instance))


@needs_dcmtk
@needs_openssl
async def test_storescu_over_mutual_tls_is_accepted(tls_hub, certificates, tmp_path):
    receiver = receiver_of(tls_hub)
    assert receiver.tls_port and receiver.tls_port != receiver.port
    paths = write_synthetic_series(tmp_path / "s", 2)
    proc = await asyncio.to_thread(storescu_tls, receiver.tls_port, certificates, paths)
    assert proc.returncode == 0, proc.stderr
    assert await _count(tls_hub) == 2


@needs_dcmtk
@needs_openssl
async def test_a_tls_caller_without_a_certificate_is_refused(tls_hub, certificates, tmp_path):
    receiver = receiver_of(tls_hub)
    paths = write_synthetic_series(tmp_path / "s", 1)
    proc = await asyncio.to_thread(
        storescu_tls, receiver.tls_port, certificates, paths, client_cert=False
    )
    assert proc.returncode != 0
    assert await _count(tls_hub) == 0


@needs_openssl
async def test_plain_dicom_on_the_tls_port_stores_nothing(tls_hub):
    receiver = receiver_of(tls_hub)

    def plain() -> bytes:
        with RawPeer.connect(receiver.tls_port, timeout=10) as peer:
            peer.send(b"\x01\x00\x00\x00\x00\x44" + bytes(68))
            try:
                return peer.sock.recv(100)
            except OSError:
                return b""

    answer = await asyncio.to_thread(plain)
    assert not answer.startswith(b"\x02")  # never an A-ASSOCIATE-AC
    # The plain port is unchanged, and a TLS client without a certificate gets no further
    # than the handshake.
    context = ssl.create_default_context(cafile=None)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE

    def handshake() -> None:
        with socket.create_connection(("127.0.0.1", receiver.tls_port), timeout=10) as raw:
            with context.wrap_socket(raw) as tls:
                tls.sendall(b"\x01\x00\x00\x00\x00\x44" + bytes(68))
                tls.recv(100)

    with pytest.raises((ssl.SSLError, OSError)):
        await asyncio.to_thread(handshake)
    assert await _count(tls_hub) == 0
