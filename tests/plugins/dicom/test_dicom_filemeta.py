"""The hub's own file meta encoder against pydicom's, which reads what it writes."""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.filereader import dcmread
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import JPEG2000, ExplicitVRLittleEndian, generate_uid

from plugins.dicom.filemeta import file_meta
from plugins.dicom.ul import IMPLEMENTATION_UID, IMPLEMENTATION_VERSION


def _pydicom(sop_class: str, sop_instance: str, ts: str, ae: str) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = IMPLEMENTATION_UID.decode()
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION.decode()
    meta.SourceApplicationEntityTitle = ae
    out = BytesIO()
    write_file_meta_info(out, meta, enforce_standard=True)
    return b"\x00" * 128 + b"DICM" + out.getvalue()


@pytest.mark.parametrize("ae", ["SCANNER1", "CT", "ODDLENGTH", "A" * 16])
@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, JPEG2000, "1.2.840.10008.1.2"])
def test_same_bytes_as_pydicom(ts, ae):
    for sop_class in ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.1.1"):
        sop_instance = generate_uid()
        ours = file_meta(sop_class, sop_instance, ts, ae)
        assert ours == _pydicom(sop_class, sop_instance, ts, ae)
        read = dcmread(BytesIO(ours), force=True)
        assert read.file_meta.MediaStorageSOPInstanceUID == sop_instance
        assert read.file_meta.TransferSyntaxUID == ts
        assert read.file_meta.SourceApplicationEntityTitle == ae
