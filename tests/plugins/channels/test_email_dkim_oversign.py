"""DKIM over-signs From, List-Unsubscribe and List-Unsubscribe-Post: a copy added in transit
breaks the signature (RFC 6376 §8.15)."""

from __future__ import annotations

import base64
import subprocess

import dkim
import pytest

from plugins.channels.email import DkimSigner

MESSAGE = (
    b"From: Parkside Vets <hub@vet.example>\r\n"
    b"To: owner@example.org\r\n"
    b"Subject: Rex is due\r\n"
    b"Message-ID: <1@vet.example>\r\n"
    b"List-Unsubscribe: <https://hub.example/u/tok123>\r\n"
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Rex's vaccine is due.\r\n"
)


@pytest.fixture(scope="module")
def key(tmp_path_factory) -> tuple[bytes, bytes]:
    path = tmp_path_factory.mktemp("dkim") / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-traditional", "-out", str(path), "2048"], check=True,
                   capture_output=True)
    pub = subprocess.run(["openssl", "rsa", "-in", str(path), "-pubout", "-outform", "DER"], check=True,
                         capture_output=True).stdout
    return path.read_bytes(), base64.b64encode(pub)


@pytest.mark.parametrize("added", [
    b"From: Bank <security@bank.example>\r\n",
    b"List-Unsubscribe: <https://evil.example/u>\r\n",
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
], ids=["from", "list-unsubscribe", "list-unsubscribe-post"])
def test_a_header_added_in_transit_breaks_the_signature(key, added) -> None:
    private, public_b64 = key
    signed = DkimSigner("vet.example", "hub", private).sign(MESSAGE)

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return b"v=DKIM1; k=rsa; p=" + public_b64

    assert dkim.verify(signed, dnsfunc=dns)
    assert not dkim.verify(added + signed, dnsfunc=dns)
    end = signed.index(b"\r\n\r\n") + 2
    assert not dkim.verify(signed[:end] + added + signed[end:], dnsfunc=dns)
