"""Cases in the browser: the practice submits a case from a received study (with an attachment),
the company admin sees it and posts the report, the practice sees the report; another company's
admin gets 404."""

from __future__ import annotations

import zipfile
from datetime import timedelta
from pathlib import Path

from hub.imaging.dicomweb import storage_root
from hub.imaging.models import Instance, Study

from .console_world import go, sign_in

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


async def test_submit_a_case_report_it_and_see_the_report(console_world, browser, check, tmp_path: Path) -> None:
    world = await console_world()
    await world.add_practice("oak-vets", "Oak Vets", ["read-right"])
    at = world.hub.clock.now() - timedelta(hours=1)
    stored = storage_root(world.hub) / "oak" / "1.dcm"
    stored.parent.mkdir(parents=True, exist_ok=True)
    stored.write_bytes(b"\x00" * 128 + b"DICM" + b"fake dataset")
    async with world.hub.transaction() as s:
        study = Study(practice_id=world.practices["oak-vets"], study_instance_uid="1.2.826.0.1.99", modality="DX",
                      modalities=["DX"], instance_count=1, size_bytes=3000, status="stable", animal_name="Rex",
                      species="Canine", responsible_person="Ann Lee", study_description="Thorax 2 views",
                      first_received_at=at, last_received_at=at, stable_at=at)
        s.add(study)
        await s.flush()
        s.add(Instance(practice_id=study.practice_id, study_id=study.id, sop_instance_uid="1.2.826.0.1.99.1.1",
                       sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1", study_instance_uid=study.study_instance_uid,
                       series_instance_uid="1.2.826.0.1.99.1", transfer_syntax_uid="1.2.840.10008.1.2.1",
                       calling_ae="OAKVETS", size_bytes=stored.stat().st_size, path="oak/1.dcm",
                       received_at=at, updated_at=at))
    await world.add_user("practice_staff", "desk@oak.example", practice="oak-vets")
    await world.add_user("company_admin", "admin@readright.example", company="read-right")
    await world.add_user("company_admin", "admin@scanco.example", company="scan-co")
    photo = tmp_path / "lesion.png"
    photo.write_bytes(PNG)

    staff = await (await browser.new_context()).new_page()
    await sign_in(staff, world, "desk@oak.example")
    await go(staff, "Studies")
    await check.page(staff, "studies")
    await staff.get_by_role("link", name="Rex").click()
    await staff.wait_for_load_state()
    await check.page(staff, "case-form")
    await staff.get_by_label("Clinical history").fill("Coughing for two weeks.")
    await staff.get_by_label("Question for the radiologist").fill("Any sign of pneumonia?")
    await staff.get_by_label("Urgency").select_option("priority")
    await staff.get_by_label("Attachments").set_input_files(str(photo))
    await staff.get_by_role("button", name="Submit the case").click()
    await staff.wait_for_load_state()
    facts = await staff.locator("main").inner_text()
    assert "ReadRight Radiology" in facts and "Any sign of pneumonia?" in facts and "lesion.png" in facts
    case_path = staff.url.split("?")[0].removeprefix(world.base_url)
    await check.page(staff, "case-staff")

    admin = await (await browser.new_context(accept_downloads=True)).new_page()
    await sign_in(admin, world, "admin@readright.example")
    await go(admin, "Cases")
    await check.page(admin, "cases-company")
    assert "Oak Vets" in await admin.locator("tbody").inner_text()
    await admin.locator("tbody").get_by_role("link").first.click()
    await admin.wait_for_load_state()
    async with admin.expect_download() as dl:
        await admin.get_by_role("link", name="lesion.png").click()
    assert (await (await dl.value).path()).read_bytes() == PNG
    async with admin.expect_download() as dl:
        await admin.get_by_role("link", name="Download the images (DICOM, zip)").click()
    with zipfile.ZipFile(await (await dl.value).path()) as zf:
        assert zf.namelist() == ["1.2.826.0.1.99.1/1.2.826.0.1.99.1.1.dcm"]
        assert zf.read(zf.namelist()[0]) == stored.read_bytes()
    await admin.get_by_label("Radiologist").fill("Dr Grey")
    await admin.get_by_label("Findings and conclusion").fill("Bronchial pattern; no pneumonia.")
    await admin.get_by_role("button", name="Post the report").click()
    await admin.wait_for_load_state()
    assert "Bronchial pattern; no pneumonia." in await admin.locator("#reports ~ article").inner_text()
    await check.page(admin, "case-company")

    await staff.reload()
    assert "Bronchial pattern; no pneumonia." in await staff.locator("main").inner_text()
    assert "Dr Grey" in await staff.locator("main").inner_text()

    other = await (await browser.new_context()).new_page()
    await sign_in(other, world, "admin@scanco.example")
    response = await other.goto(world.url(case_path))
    assert response.status == 404
