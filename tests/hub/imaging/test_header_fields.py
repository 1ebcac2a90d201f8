"""One declaration of the instance header fields (hub.imaging.header_fields): the parser, the
rows, the received instance, filing and the studies API all agree with it."""

from __future__ import annotations

from dataclasses import fields

import pytest
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy import String, select

from hub.db.models import Practice
from hub.imaging.api import study_summary
from hub.imaging.header_fields import HEADER_FIELDS, HEADER_NAMES, WIDTHS, check_declared
from hub.imaging.models import Instance, Study
from hub.imaging.service import ReceivedInstance, store_instances
from plugins.dicom import header as parser


def test_each_field_names_the_element_pydicom_knows_by_its_keyword():
    assert [tag_for_keyword(f.keyword) for f in HEADER_FIELDS] == [f.tag for f in HEADER_FIELDS]
    assert len(set(HEADER_NAMES)) == len(HEADER_FIELDS)


@pytest.mark.parametrize("row", [Study, Instance])
def test_the_rows_have_a_column_of_the_declared_width_per_field(row):
    for f in HEADER_FIELDS:
        column = row.__table__.c[f.name]
        assert isinstance(column.type, String) and column.type.length == f.width, f.name
        assert column.nullable


def test_the_parser_reads_the_declared_elements_into_the_declared_fields():
    declared = {f.keyword: (f.tag, f.name) for f in HEADER_FIELDS}
    assert {k: v for k, v in parser._FIELDS.items() if k in declared} == declared
    assert set(parser._FIELDS) - set(declared) == {
        "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"}
    assert parser.TEXT_WIDTHS == WIDTHS
    assert [f.name for f in fields(parser.InstanceHeader)][4:] == list(HEADER_NAMES)


def test_a_received_instance_carries_the_fields_last_in_the_declared_order():
    assert [f.name for f in fields(ReceivedInstance)][-len(HEADER_NAMES):] == list(HEADER_NAMES)


def test_a_class_out_of_step_fails_at_import():
    with pytest.raises(TypeError, match="differ"):
        check_declared("a stale class", [*HEADER_NAMES[:-1], "clinic"])


def _long_values() -> dict[str, str]:
    """A value one character over each field's width (a date is a valid DA: cut to 8)."""
    values = {f.name: (f.name[0].upper() * (f.width + 1)) for f in HEADER_FIELDS}
    values["study_date"] = "202612071"
    return values


def _encoded(values: dict[str, str]) -> bytes:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.5"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3", "1.2.3.4"
    for f in HEADER_FIELDS:
        setattr(ds, f.keyword, values[f.name])
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    write_dataset(out, ds)
    return out.getvalue()


def test_the_parser_cuts_every_field_to_its_declared_width():
    values = _long_values()
    parsed = parser.parse_fragments([memoryview(_encoded(values))], ExplicitVRLittleEndian)
    assert {name: getattr(parsed, name) for name in HEADER_NAMES} == {
        f.name: values[f.name][: f.width] for f in HEADER_FIELDS}


async def test_parsed_fields_reach_the_rows_and_the_studies_api(hub_factory, dicom_config_data):
    hub = await hub_factory(dicom_config_data())
    async with hub.sessionmaker() as s:
        practice = await s.scalar(select(Practice.id).where(Practice.slug == "vet-one"))
    parsed = parser.parse_fragments([memoryview(_encoded(_long_values()))], ExplicitVRLittleEndian)
    expected = {name: getattr(parsed, name) for name in HEADER_NAMES}
    item = ReceivedInstance(
        practice, "SCANNER1", "127.0.0.1", parsed.sop_class_uid, parsed.sop_instance_uid,
        parsed.study_instance_uid, parsed.series_instance_uid, ExplicitVRLittleEndian, 100,
        f"p{practice}/1.2.3/1.2.3.4/1.2.3.4.5.dcm", *expected.values(),
    )
    async with hub.transaction() as s:  # on PostgreSQL a value over its width would fail here
        await store_instances(s, hub, [item], stable_age=30)
    async with hub.sessionmaker() as s:
        instance = (await s.execute(select(Instance))).scalar_one()
        study = (await s.execute(select(Study))).scalar_one()
    assert {name: getattr(instance, name) for name in HEADER_NAMES} == expected
    assert {name: getattr(study, name) for name in HEADER_NAMES} == expected
    summary = study_summary(study)
    assert {name: summary[name] for name in HEADER_NAMES} == expected
