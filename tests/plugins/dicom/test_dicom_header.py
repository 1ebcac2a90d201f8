"""The header fast path reads what pydicom reads, or leaves the data set to pydicom."""

from __future__ import annotations

import io

import pytest

from hub.testing.dicom import dataset_bytes, file_meta_of, synthetic_dataset, write_dataset
from plugins.dicom.header import HeaderError, parse_fragments, parse_header

from .test_dicom_robustness import mutated_files


def _parse(data: bytes, ts: str, *, fast: bool):
    # parse_header takes its fast path only for a BytesIO; any other stream goes to pydicom
    stream = io.BytesIO(data) if fast else io.BufferedReader(io.BytesIO(data))
    try:
        return parse_header(stream, ts)
    except HeaderError as err:
        return err.status


def _compare(path, data: bytes | None = None) -> str:
    meta, _ = file_meta_of(path)
    ts = str(meta.TransferSyntaxUID)
    data = dataset_bytes(path) if data is None else data
    fast, slow = _parse(data, ts, fast=True), _parse(data, ts, fast=False)
    if fast == slow:
        return "same"
    # Reading stops after Series Instance UID: damage further on is stored as received.
    assert slow == 0xC000 and not isinstance(fast, int), (path, fast, slow)
    return "later damage"


def test_every_pydicom_sample(dicom_samples):
    outcomes = [_compare(path) for path in dicom_samples]
    assert outcomes and set(outcomes) == {"same"}


def test_a_thousand_mutated_data_sets(tmp_path):
    outcomes = [_compare(path) for path in mutated_files(tmp_path / "m", 1000)]
    assert outcomes.count("same") > 900


@pytest.mark.parametrize(("charset", "name"), [
    (None, "Rex^Fido"), ("ISO_IR 100", "Müller^Fido"), ("ISO_IR 192", "Müller^Fido"),
    ("ISO_IR 144", "Шарик^Fido"),  # Cyrillic: pydicom's path
])
def test_character_sets(tmp_path, charset, name):
    ds = synthetic_dataset(sop_uid="1.2.3.4.5", number=1, rows=2, columns=2)
    if charset is None:
        del ds.SpecificCharacterSet
    else:
        ds.SpecificCharacterSet = charset
    ds.PatientName = name
    path = write_dataset(ds, tmp_path / "cs.dcm")
    assert _compare(path) == "same"
    ts = str(file_meta_of(path)[0].TransferSyntaxUID)
    assert parse_header(io.BytesIO(dataset_bytes(path)), ts).animal_name == name


def test_fragments_cut_anywhere_read_as_the_whole(dicom_samples):
    """The first fragment alone when it holds the header, joined when the cut falls inside."""
    for path in dicom_samples[:12]:
        ts = str(file_meta_of(path)[0].TransferSyntaxUID)
        data = dataset_bytes(path)
        whole = _parse(data, ts, fast=True)
        for cut in sorted({1, 7, 8, 100, 300, 600, 1000, len(data) // 2, len(data) - 1}):
            if not 0 < cut < len(data):
                continue
            view = memoryview(data)
            try:
                got = parse_fragments([view[:cut], view[cut:]], ts)
            except HeaderError as err:
                got = err.status
            assert got == whole, (path.name, cut)
