"""The DICOM header fields the hub keeps for each instance and study, declared once.

Each field names its attribute (the row's column, the received instance's field, the API's
key), the DICOM element it is read from, and the width its text is cut to. The parser
(``plugins.dicom.header``) reads these elements and cuts their values to these widths, the
``Study`` and ``Instance`` rows take their columns from here, filing copies these fields from
a received instance to a new study, and the studies API lists them.

The dataclasses that carry the fields between them (:class:`~hub.imaging.service.ReceivedInstance`,
``plugins.dicom.header.InstanceHeader``) spell them out so the type checker knows them;
:func:`check_declared` makes importing such a class fail when it is out of step with this
declaration. A new field is a line here, a migration, and the two dataclasses' lines.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["HEADER_FIELDS", "HEADER_NAMES", "WIDTHS", "HeaderField", "check_declared",
           "header_values"]


@dataclass(frozen=True, slots=True)
class HeaderField:
    """One kept header field: its attribute name, the DICOM element it comes from, its width."""
    name: str  # the attribute, column and API key
    keyword: str  # the DICOM keyword of the element it is read from
    tag: int  # that element's tag
    width: int  # the column's width; the parser cuts a longer value to it


HEADER_FIELDS: tuple[HeaderField, ...] = (
    HeaderField("modality", "Modality", 0x00080060, 16),
    HeaderField("animal_name", "PatientName", 0x00100010, 200),
    HeaderField("animal_id", "PatientID", 0x00100020, 64),
    HeaderField("species", "PatientSpeciesDescription", 0x00102201, 64),
    HeaderField("responsible_person", "ResponsiblePerson", 0x00102297, 200),
    HeaderField("body_part", "BodyPartExamined", 0x00180015, 64),
    HeaderField("study_date", "StudyDate", 0x00080020, 8),
    HeaderField("study_description", "StudyDescription", 0x00081030, 200),
    HeaderField("institution", "InstitutionName", 0x00080080, 200),
)
HEADER_NAMES: tuple[str, ...] = tuple(f.name for f in HEADER_FIELDS)
WIDTHS: dict[str, int] = {f.name: f.width for f in HEADER_FIELDS}


def header_values(source: Any) -> dict[str, str | None]:
    """The header fields of ``source`` (a row, a received instance, a parsed header)."""
    return {name: getattr(source, name) for name in HEADER_NAMES}


def check_declared(what: str, names: Iterable[str]) -> None:
    """Raise TypeError unless ``names`` (a class's header fields, in order) are the declared
    ones, in the declared order (the relay sends a received instance's fields in order)."""
    got = tuple(names)
    if got != HEADER_NAMES:
        raise TypeError(f"{what}'s header fields {got} differ from hub.imaging.header_fields' "
                        f"{HEADER_NAMES}")
