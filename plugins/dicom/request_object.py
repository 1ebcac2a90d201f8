"""The practice's request as DICOM objects a PACS can show, sent with the case's images.

A Basic Text SR in the case's study carries the clinical history, the question, the urgency,
the patient and the practice; each PDF attachment travels as an Encapsulated PDF in the same
series (image attachments are named in the SR and stay downloadable from the hub). UIDs are
derived from the case id, so a retried forward re-sends the same objects and the PACS keeps
one copy. :func:`add_request_objects` writes them under the storage root and appends them to
the forward plan with negative ids, so the forwarder sends them in the same association.
"""

from __future__ import annotations

from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from hub.imaging.forwarding import ForwardItem, ForwardPlan, RequestFacts

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
REQUEST_SERIES_NUMBER = 9001
SR_ID = -1  # the SR's id in the plan; attachments are -2, -3, ...


def _uid(facts: RequestFacts, what: str) -> str:
    return generate_uid(entropy_srcs=[f"vethub-case-{facts.case_id}-request-{what}"])


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _text(concept: Dataset, value: str) -> Dataset:
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = Sequence([concept])
    item.TextValue = value
    return item


def _base(facts: RequestFacts, sop_class: str, sop_uid: str, modality: str, number: int) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: histories are written in any language
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.StudyInstanceUID = facts.study_instance_uid
    ds.SeriesInstanceUID = _uid(facts, "series")
    ds.Modality = modality
    ds.SeriesNumber, ds.InstanceNumber = REQUEST_SERIES_NUMBER, number
    ds.SeriesDescription = "VetHub request"
    ds.PatientName = facts.patient_name or ""
    ds.PatientID = facts.patient_id or ""
    ds.PatientBirthDate = ds.PatientSex = ""
    if facts.species:
        ds.PatientSpeciesDescription = facts.species
    if facts.owner:
        ds.ResponsiblePerson = facts.owner
    ds.StudyDate = facts.study_date or ""
    ds.StudyTime = ds.AccessionNumber = ds.ReferringPhysicianName = ds.StudyID = ""
    ds.ContentDate = facts.submitted_at.strftime("%Y%m%d")
    ds.ContentTime = facts.submitted_at.strftime("%H%M%S")
    ds.InstitutionName = facts.practice_name[:64]
    ds.Manufacturer = "VetHub"
    return ds


def request_sr(facts: RequestFacts) -> Dataset:
    """The Basic Text SR: history, question, urgency, attachments' names."""
    ds = _base(facts, BASIC_TEXT_SR, _uid(facts, "sr"), "SR", 1)
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([_code("55115-0", "LN", "Request")])
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
    items = [
        _text(_code("121060", "DCM", "History"), facts.clinical_history or "(none given)"),
        _text(_code("121062", "DCM", "Request"), facts.question or "(none given)"),
        _text(_code("URGENCY", "99VETHUB", "Urgency"), facts.urgency),
        _text(_code("SUBMITTER", "99VETHUB", "Submitted by"),
              f"{facts.practice_name} ({facts.submitted_by}), case {facts.case_id}"),
    ]
    if facts.attachments:
        names = ", ".join(f"{name} ({kind})" for name, kind, _ in facts.attachments)
        items.append(_text(_code("ATTACHMENTS", "99VETHUB", "Attachments"), names))
    ds.ContentSequence = Sequence(items)
    return ds


def attachment_pdf(facts: RequestFacts, index: int, filename: str, content: bytes) -> Dataset:
    ds = _base(facts, ENCAPSULATED_PDF, _uid(facts, f"pdf-{index}"), "DOC", index + 2)
    ds.ConceptNameCodeSequence = Sequence([])
    ds.DocumentTitle = filename[:64]
    ds.BurnedInAnnotation = "YES"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = content + (b"\x00" if len(content) % 2 else b"")
    return ds


def request_objects(facts: RequestFacts) -> list[tuple[int, Dataset]]:
    """(plan id, data set) for the SR and each PDF attachment."""
    out = [(SR_ID, request_sr(facts))]
    for i, (name, kind, content) in enumerate(facts.attachments):
        if kind == "application/pdf":
            out.append((SR_ID - 1 - i, attachment_pdf(facts, i, name, content)))
    return out


def add_request_objects(plan: ForwardPlan, root: Path) -> None:
    """Write the request objects under ``root/requests`` and append them to the plan (blocking:
    call it from a thread)."""
    if plan.request is None:
        return
    folder = root / "requests" / f"case-{plan.case_id}"
    folder.mkdir(parents=True, exist_ok=True)
    for plan_id, ds in request_objects(plan.request):
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        plan.items.append(ForwardItem(plan_id, str(path.relative_to(root)), ds.SOPClassUID,
                                      ExplicitVRLittleEndian))
