"""DICOMweb search and metadata: a viewer finds the case's study, lays it out, and fetches the
pixel data by its BulkDataURI — for the token that may see it, and nobody else."""

from __future__ import annotations

import pydicom
from yarl import URL

from .cases_helpers import ids, make_stable, parse_multipart, send


async def test_qido_metadata_and_bulkdata(hub_factory, dicom_config_data, frozen_clock, api_for, tmp_path):
    hub = await hub_factory(dicom_config_data(), clock=frozen_clock)
    sent = await send(hub, tmp_path / "ct", 2, modality="CT", animal_id="P-9", rows=64, columns=64)
    await make_stable(hub, frozen_clock)
    known = await ids(hub)
    api = await api_for(hub)
    staff = await api.as_role("practice_staff", practice_id=known["practice:vet-one"])
    rad = await api.as_role("company_admin", company_id=known["company:rad-co"])
    sono = await api.as_role("company_admin", company_id=known["company:sono-co"])
    first = pydicom.dcmread(sent[0])
    study, series = first.StudyInstanceUID, first.SeriesInstanceUID

    async with rad.get("/dicomweb/studies") as rsp:
        assert await rsp.json() == []  # not a case yet: not the company's to see
    async with staff.post("/api/cases", json={"study_id": known["study:CT"]}) as rsp:
        assert rsp.status == 201
    async with rad.get("/dicomweb/studies", params={"PatientID": "P-9", "includefield": "all"}) as rsp:
        assert rsp.status == 200 and rsp.content_type == "application/dicom+json"
        [found] = await rsp.json()
    assert found["0020000D"]["Value"] == [study] and found["00201208"]["Value"] == [2]
    assert found["00080061"]["Value"] == ["CT"]
    async with rad.get(f"/dicomweb/studies/{study}/series") as rsp:
        [s] = await rsp.json()
    assert s["0020000E"]["Value"] == [series] and s["00201209"]["Value"] == [2]
    async with rad.get(f"/dicomweb/studies/{study}/series/{series}/instances") as rsp:
        assert {i["00080018"]["Value"][0] for i in await rsp.json()} == {
            pydicom.dcmread(p).SOPInstanceUID for p in sent}

    async with rad.get(f"/dicomweb/studies/{study}/metadata") as rsp:
        metadata = await rsp.json()
    by_uid = {m["00080018"]["Value"][0]: m for m in metadata}
    pixel_uri = by_uid[first.SOPInstanceUID]["7FE00010"]["BulkDataURI"]
    async with rad.get(URL(pixel_uri).path) as rsp:
        assert rsp.status == 200
        [(headers, pixels)] = parse_multipart(rsp.headers["Content-Type"], await rsp.read())
    assert headers["Content-Type"] == "application/octet-stream" and pixels == first.PixelData
    async with rad.get(f"/dicomweb/studies/{study}/series/{series}/metadata") as rsp:
        assert len(await rsp.json()) == 2

    for path in ("/dicomweb/studies/" + study + "/series", f"/dicomweb/studies/{study}/metadata",
                 URL(pixel_uri).path):
        async with sono.get(path) as rsp:
            assert rsp.status == 404, path
    async with sono.get("/dicomweb/studies") as rsp:
        assert await rsp.json() == []
    async with api.client.get("/dicomweb/studies") as rsp:
        assert rsp.status == 401
