"""Helpers the case tests share: sending a study, making it stable, reading the Maildir sink."""

from __future__ import annotations

import asyncio
import base64
import mailbox
import subprocess
import tomllib
from email.message import Message
from pathlib import Path
from typing import Any

from sqlalchemy import select

from hub.config import HubConfig, load_config
from hub.db.models import Company, Practice
from hub.imaging.models import Study
from hub.testing.dicom import send_files, storescu_command, write_synthetic_series
from hub.testing.fixtures_dicom import HUB_AE, PRACTICE_AE, dicom_port

EXAMPLE = Path(__file__).parents[3] / "config.example.toml"
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def example_config(db_url: str, tmp_path: Path) -> HubConfig:
    """config.example.toml as shipped; only what differs on a test machine is changed: the
    data directory, the database, and port 0 for the DICOM listener."""
    data: dict[str, Any] = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    data["hub"]["data_dir"] = str(tmp_path / "var")
    data["database"]["url"] = db_url
    data["dicom"]["port"] = 0
    data["practices"][0]["pims"][0]["drop_dir"] = str(tmp_path / "pims-drop")
    return load_config(EXAMPLE, data=data, env={})


async def storescu(hub: Any, folder: Path, *, calling_ae: str) -> None:
    cmd = storescu_command("127.0.0.1", dicom_port(hub), [folder], called_ae=HUB_AE, calling_ae=calling_ae)
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode(errors="replace")


async def send(hub: Any, folder: Path, count: int, modality: str = "CT",
               calling_ae: str = PRACTICE_AE, **kw: Any) -> list[Path]:
    paths = write_synthetic_series(folder, count, modality=modality, **kw)
    results = await asyncio.to_thread(send_files, "127.0.0.1", dicom_port(hub), paths,
                                      called_ae=HUB_AE, calling_ae=calling_ae)
    assert {r.status for r in results} == {0}, results
    return paths


async def make_stable(hub: Any, clock: Any, seconds: float = 3600) -> None:
    clock.advance(seconds=seconds)
    await hub.jobs.run_until_idle()


async def ids(hub: Any) -> dict[str, int]:
    async with hub.sessionmaker() as s:
        out = {f"company:{c.slug}": c.id for c in (await s.execute(select(Company))).scalars()}
        out.update({f"practice:{p.slug}": p.id for p in (await s.execute(select(Practice))).scalars()})
        out.update({f"study:{st.modality}": st.id for st in (await s.execute(select(Study))).scalars()})
    return out


def mails(hub: Any) -> list[Message]:
    box = mailbox.Maildir(hub.data_dir / "mail", create=False)
    return sorted((m for m in box), key=lambda m: m["Date"] or "")


def body_of(message: Message) -> str:
    if message.is_multipart():
        for part in message.walk():
            if part.get_content_type() == "text/plain":
                return part.get_payload(decode=True).decode()
    return message.get_payload(decode=True).decode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def parse_multipart(content_type: str, body: bytes) -> list[tuple[dict[str, str], bytes]]:
    """Split a multipart/related body into (headers, payload) parts, payloads byte for byte."""
    boundary = content_type.split("boundary=")[1].split(";")[0].strip().strip('"').encode()
    parts = []
    for chunk in body.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, payload = chunk.lstrip(b"\r\n").partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n") if line)
        length = int(headers["Content-Length"])
        parts.append((headers, payload[:length]))
    return parts
