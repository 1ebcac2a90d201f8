"""Extract the header fields the hub keeps for an instance, from the data set bytes as received.

Only the elements listed in :data:`HEADER_TAGS` are read, and reading stops before the pixel
data, so a large image costs no more than a small one. The bytes are never decoded and
re-encoded for storage; this module only looks at them.

Which elements are header fields, and the width each is cut to, is declared once in
:mod:`hub.imaging.header_fields` (the rows' columns come from it too). Every text value is
cleaned (control characters removed, surrounding spaces stripped) and cut to that width. None
of it is ever used as a path.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, BinaryIO

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag, Tag
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
)

from hub.imaging.header_fields import HEADER_FIELDS, WIDTHS, check_declared

from .storage import is_valid_uid

__all__ = ["HEADER_TAGS", "HeaderError", "InstanceHeader", "parse_fragments", "parse_header"]

STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_DATASET_MISMATCH = 0xA900

# The widths the rows keep (hub.imaging.header_fields, which the columns are made from).
TEXT_WIDTHS = WIDTHS

# keyword -> (tag, field): the four UIDs every instance must have, then the header fields
_FIELDS: dict[str, tuple[int, str]] = {
    "SOPClassUID": (0x00080016, "sop_class_uid"),
    "SOPInstanceUID": (0x00080018, "sop_instance_uid"),
    "StudyInstanceUID": (0x0020000D, "study_instance_uid"),
    "SeriesInstanceUID": (0x0020000E, "series_instance_uid"),
    **{f.keyword: (f.tag, f.name) for f in HEADER_FIELDS},
}
HEADER_TAGS: list[BaseTag | int] = [Tag(0x00080005), *(Tag(t) for t, _ in _FIELDS.values())]


class HeaderError(Exception):
    """The data set cannot be accepted; ``status`` is the C-STORE failure status."""

    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment


@dataclass(frozen=True, slots=True)
class InstanceHeader:
    """What the hub reads from a received instance's header to file it and its study."""
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    modality: str | None = None
    animal_name: str | None = None
    animal_id: str | None = None
    species: str | None = None
    responsible_person: str | None = None
    body_part: str | None = None
    study_date: str | None = None
    study_description: str | None = None
    institution: str | None = None


check_declared("InstanceHeader", [f.name for f in fields(InstanceHeader)][4:])


def _clean(value: Any, width: int) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        text = value.decode("latin-1")
    elif isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        text = "\\".join(str(v) for v in value)
    else:
        text = str(value)
    text = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    return text[:width] or None


def _read(stream: BinaryIO, transfer_syntax: str) -> Dataset:
    implicit = transfer_syntax == ImplicitVRLittleEndian
    little = transfer_syntax != ExplicitVRBigEndian
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        stream = io.BytesIO(zlib.decompress(stream.read(), -zlib.MAX_WBITS))
    return read_dataset(
        stream,
        implicit,
        little,
        stop_when=lambda tag, vr, length: tag >= 0x7FE00008,
        specific_tags=HEADER_TAGS,
    )


# The VR each wanted element must have; an element with another VR takes pydicom's path.
_VRS: dict[int, bytes] = {int(tag): dictionary_VR(tag).encode() for tag in HEADER_TAGS}
_LAST = max(_VRS)
_UID_TAGS = [tag for tag, vr in _VRS.items() if vr == b"UI"]
_LONG = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_CHARSETS = {"": "latin-1", "ISO_IR 6": "latin-1", "ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}
_UNDEFINED = 0xFFFFFFFF


def _scan(data: memoryview, transfer_syntax: str) -> dict[str, Any] | None:
    """The wanted values of a plain data set, or None for anything unusual.

    A fast path for the common case (little endian, defined lengths up to Series Instance
    UID, a Latin-1 or UTF-8 character set, single values, all four UIDs present and valid):
    pydicom builds an element object for everything it passes, ~0.25 ms a header. Anything
    else, refusals included, is pydicom's. Reading stops after Series Instance UID, so damage
    further on (which pydicom would refuse) is stored as received.
    """
    if transfer_syntax == ExplicitVRBigEndian or transfer_syntax == DeflatedExplicitVRLittleEndian:
        return None
    raw = _scan_elements(data, explicit=transfer_syntax != ImplicitVRLittleEndian)
    if raw is None:
        return None
    return _decode_values(raw)


def _scan_elements(data: memoryview, *, explicit: bool) -> dict[int, bytes] | None:
    """The raw bytes of the wanted elements up to the last wanted tag, or None for anything
    :func:`_scan` leaves to pydicom (tags out of order, a long VR cut short, undefined lengths)."""
    raw: dict[int, bytes] = {}
    pos, end, last = 0, len(data), -1
    unpack = struct.unpack_from
    while pos + 8 <= end:
        group, elem = unpack("<HH", data, pos)
        tag = (group << 16) | elem
        if tag > _LAST:
            break
        if tag <= last:
            return None
        last = tag
        if explicit:
            vr = bytes(data[pos + 4 : pos + 6])
            if not (vr.isalpha() and vr.isupper()):  # e.g. implicit VR under an explicit UID
                return None
            if vr in _LONG:
                if pos + 12 > end:
                    return None
                length = unpack("<I", data, pos + 8)[0]
                pos += 12
            else:
                length = unpack("<H", data, pos + 6)[0]
                pos += 8
            if tag in _VRS and vr != _VRS[tag]:
                return None
        else:
            length = unpack("<I", data, pos + 4)[0]
            pos += 8
        if length == _UNDEFINED or pos + length > end:
            return None
        if tag in _VRS:
            raw[tag] = bytes(data[pos : pos + length])
        pos += length
    return raw


def _decode_values(raw: dict[int, bytes]) -> dict[str, Any] | None:
    """The wanted fields decoded from their raw bytes, or None when one needs pydicom (an
    unknown character set, a multi-value, a missing or invalid UID, bytes not in the charset)."""
    charset = raw.get(0x00080005, b"").decode("ascii", "replace").strip("\x00 ")
    encoding = _CHARSETS.get(charset)
    if encoding is None or any(b"\\" in value for value in raw.values()):
        return None
    if any(tag not in raw for tag in _UID_TAGS):
        return None
    values: dict[str, Any] = {}
    for tag, field in _FIELDS.values():
        value = raw.get(tag)
        if value is None:
            values[field] = None
        elif _VRS[tag] == b"UI":
            uid = value.decode("ascii", "replace").rstrip("\x00 ")
            if not is_valid_uid(uid):  # refusals are pydicom's to word
                return None
            values[field] = uid
        else:
            try:
                values[field] = value.decode(encoding).rstrip("\x00 ") or None
            except UnicodeDecodeError:
                return None
    return values


def _value(ds: Dataset, tag: int) -> Any:
    elem = ds.get(tag)
    if elem is None:
        return None
    return elem.value


def parse_header(
    stream: BinaryIO,
    transfer_syntax: str,
    *,
    expected_sop_class: str | None = None,
    expected_sop_instance: str | None = None,
) -> InstanceHeader:
    """Read the header of the encoded data set in ``stream`` (left positioned at its start).

    :param stream: the data set as received (no file meta), e.g. the C-STORE request's BytesIO.
    :param transfer_syntax: the UID of the presentation context's transfer syntax.
    :param expected_sop_class: the request's Affected SOP Class UID, checked against the data set.
    :param expected_sop_instance: the request's Affected SOP Instance UID, likewise.
    :raises HeaderError: 0xC000 when the data set cannot be parsed, 0xA900 when UIDs are
        missing, invalid or do not match the request.
    """
    start = stream.tell()
    raw: dict[str, Any] | None = None
    if isinstance(stream, io.BytesIO):
        # getvalue, not getbuffer: a BytesIO made from bytes shares them until written to,
        # and getbuffer would copy them (a whole image) to unshare.
        raw = _scan(memoryview(stream.getvalue())[start:], transfer_syntax)
    if raw is None:
        try:
            ds = _read(stream, transfer_syntax)
            raw = {field: _value(ds, tag) for tag, field in _FIELDS.values()}
        except Exception as err:  # pydicom raises many kinds on bad input
            raise HeaderError(
                STATUS_CANNOT_UNDERSTAND, f"data set cannot be parsed: {type(err).__name__}"
            ) from err
        finally:
            stream.seek(start)

    return _checked(raw, expected_sop_class, expected_sop_instance)


def parse_fragments(
    fragments: Sequence[memoryview],
    transfer_syntax: str,
    *,
    expected_sop_class: str | None = None,
    expected_sop_instance: str | None = None,
) -> InstanceHeader:
    """:func:`parse_header` of a data set received in fragments (P-DATA values), without
    joining them when the first holds the whole header (it nearly always does: the header
    ends with Series Instance UID, long before the pixel data); otherwise joined and parsed."""
    raw = _scan(fragments[0], transfer_syntax) if fragments else None
    if raw is None:
        return parse_header(
            io.BytesIO(b"".join(fragments)), transfer_syntax,
            expected_sop_class=expected_sop_class, expected_sop_instance=expected_sop_instance,
        )
    return _checked(raw, expected_sop_class, expected_sop_instance)


def _checked(
    raw: dict[str, Any], expected_sop_class: str | None, expected_sop_instance: str | None
) -> InstanceHeader:
    uids: dict[str, str] = {}
    for field, label in (
        ("sop_class_uid", "SOP Class UID"),
        ("sop_instance_uid", "SOP Instance UID"),
        ("study_instance_uid", "Study Instance UID"),
        ("series_instance_uid", "Series Instance UID"),
    ):
        value = raw[field]
        if isinstance(value, bytes | bytearray):
            value = bytes(value).decode("ascii", "replace")
        if isinstance(value, str):
            value = value.rstrip("\x00 ")
        if value in (None, ""):
            raise HeaderError(STATUS_DATASET_MISMATCH, f"{label} (missing) is required")
        if not is_valid_uid(value):
            raise HeaderError(STATUS_DATASET_MISMATCH, f"{label} is not a valid UID")
        uids[field] = str(value)
    if expected_sop_instance is not None:
        expected_sop_instance = expected_sop_instance.rstrip("\x00 ")
    if expected_sop_class is not None:
        expected_sop_class = expected_sop_class.rstrip("\x00 ")
    if expected_sop_instance is not None and uids["sop_instance_uid"] != expected_sop_instance:
        raise HeaderError(
            STATUS_DATASET_MISMATCH,
            "SOP Instance UID in the data set differs from the C-STORE request",
        )
    if expected_sop_class is not None and uids["sop_class_uid"] != expected_sop_class:
        raise HeaderError(
            STATUS_DATASET_MISMATCH,
            "SOP Class UID in the data set differs from the C-STORE request",
        )

    text: dict[str, str | None] = {}
    for field, width in TEXT_WIDTHS.items():
        try:
            text[field] = _clean(raw[field], width)
        except Exception:  # a value that cannot be decoded is kept as unknown
            text[field] = None
    return InstanceHeader(uids["sop_class_uid"], uids["sop_instance_uid"],
                          uids["study_instance_uid"], uids["series_instance_uid"], **text)
