"""With a real peer: dcmtk's storescp as the company's PACS receives the images and the request
objects (dcmdump shows the history and the question); a report sent back as a DICOM SR by
storescu from the company's AE marks the case reported."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from pathlib import Path

import pydicom
import pytest

from hub.imaging.models import Case
from plugins.dicom.request_object import (
    BASIC_TEXT_SR,
    ENCAPSULATED_PDF,
)

from .cases_helpers import PDF, b64, body_of, ids, mails, make_stable, report_sr, send, storescu

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("storescp") is None, reason="dcmtk is not installed"),
]
PACS_AE = "RADPACS"


async def _start_storescp(port: int, out: Path) -> subprocess.Popen:
    out.mkdir()
    proc = subprocess.Popen(["storescp", "-aet", PACS_AE, "-od", str(out), str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert asyncio.get_running_loop().time() < deadline, "storescp did not start"
            await asyncio.sleep(0.05)


async def test_storescp_receives_images_and_request_and_a_report_comes_back(
    hub_factory, dicom_config_data, frozen_clock, api_for, free_port, tmp_path
):
    pacs = await _start_storescp(free_port, tmp_path / "pacs")
    try:
        data = dicom_config_data(email={"backend": "maildir", "maildir_path": "mail",
                                        "from_address": "hub@vet.example"})
        data["companies"][0]["reading_email"] = "reading@rad.example"
        data["companies"][0]["destination"] = {"host": "127.0.0.1", "port": free_port, "ae_title": PACS_AE}
        # The company's AE title is registered with the hub, so its reports are accepted.
        data["practices"][0]["calling_aes"].append(PACS_AE)
        hub = await hub_factory(data, clock=frozen_clock)
        sent = await send(hub, tmp_path / "ct", 2, modality="CT")
        await make_stable(hub, frozen_clock)
        known = await ids(hub)
        staff = await (await api_for(hub)).as_role("practice_staff", practice_id=known["practice:vet-one"])
        async with staff.post("/api/cases", json={
                "study_id": known["study:CT"], "urgency": "stat",
                "clinical_history": "Coughing for two weeks; Müller's lab results attached.",
                "question": "Pulmonary metastases?",
                "attachments": [{"filename": "lab.pdf", "content_type": "application/pdf",
                                 "content_base64": b64(PDF)}]}) as rsp:
            assert rsp.status == 201, await rsp.text()
            case = await rsp.json()
        await hub.jobs.run_until_idle()
        async with staff.get(f"/api/cases/{case['id']}") as rsp:
            assert (await rsp.json())["status"] == "delivered"

        [notice] = [m for m in mails(hub) if m["To"] == "reading@rad.example"]
        assert "[STAT]" in notice["Subject"] and f"C-STORE to {PACS_AE}@127.0.0.1" in body_of(notice)
        assert "Pulmonary metastases?" in body_of(notice)

        received = {pydicom.dcmread(p).SOPInstanceUID: p for p in (tmp_path / "pacs").iterdir()}
        by_class: dict[str, list[Path]] = {}
        for path in received.values():
            by_class.setdefault(pydicom.dcmread(path).SOPClassUID, []).append(path)
        assert {pydicom.dcmread(p).SOPInstanceUID for p in sent} <= set(received)
        [sr] = by_class[BASIC_TEXT_SR]
        dump = subprocess.run(["dcmdump", "+L", "+U8", str(sr)], capture_output=True, text=True, check=True).stdout
        assert "Coughing for two weeks; Müller's lab results attached." in dump
        assert "Pulmonary metastases?" in dump and "stat" in dump and "lab.pdf" in dump
        [pdf] = by_class[ENCAPSULATED_PDF]
        assert bytes(pydicom.dcmread(pdf).EncapsulatedDocument).rstrip(b"\0") == PDF
        assert pydicom.dcmread(sr).StudyInstanceUID == pydicom.dcmread(sent[0]).StudyInstanceUID

        # The company's reporting system sends its SR back from its AE title.
        report = report_sr(pydicom.dcmread(sent[0]).StudyInstanceUID,
                            "No evidence of pulmonary metastases.", "Reader^Anna")
        folder = tmp_path / "report"
        folder.mkdir()
        report.save_as(folder / "report.dcm", enforce_file_format=True)
        await storescu(hub, folder, calling_ae=PACS_AE)
        deadline = asyncio.get_running_loop().time() + 20
        while True:
            async with hub.sessionmaker() as s:
                row = await s.get(Case, case["id"])
            if row.status == "reported":
                break
            assert asyncio.get_running_loop().time() < deadline, row.status
            await asyncio.sleep(0.05)
        async with staff.get(f"/api/cases/{case['id']}/reports") as rsp:
            [item] = (await rsp.json())["items"]
        assert item["text"] == "No evidence of pulmonary metastases."
        assert item["radiologist"] == "Reader^Anna" and item["source"] == "dicom"
        assert item["created_by"] == f"dicom:{PACS_AE}"
    finally:
        pacs.terminate()
        pacs.wait(timeout=10)
