"""Reports that come back by C-STORE: an SR or an Encapsulated PDF for a case's study, sent to
the hub from the AE title the reading company registered (``report_ae`` in its config, else
the AE title of its ``destination``).

The receiver files it like any instance (under the practice the calling AE title is
registered to, into the case's study); ``vethub_instance_stored`` then brings it here, where
it becomes the case's report (or an addendum) exactly as one posted to the API would.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from pydicom import dcmread
from pydicom.dataset import Dataset
from sqlalchemy import select

from hub.db.models import Company
from hub.imaging.dicomweb import storage_root
from hub.imaging.models import Case, CaseReport, CaseStatus, Instance
from hub.imaging.reports import add_report

if TYPE_CHECKING:
    from hub.core import Hub

log = logging.getLogger(__name__)

REPORT_MODALITIES = frozenset({"SR", "DOC", "OT"})
SR_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
})
PDF_CLASS = "1.2.840.10008.5.1.4.1.1.104.1"  # Encapsulated PDF


def report_ae_of(company: Company) -> str | None:
    settings = company.settings or {}
    return settings.get("report_ae") or (settings.get("dicom_destination") or {}).get("ae_title")


def _texts(items: object) -> list[str]:
    out: list[str] = []
    for item in items or []:  # type: ignore[attr-defined]
        if getattr(item, "ValueType", "") == "TEXT" and getattr(item, "TextValue", ""):
            out.append(str(item.TextValue))
        if "ContentSequence" in item:
            out.extend(_texts(item.ContentSequence))
    return out


def _signer(ds: Dataset, fallback: str) -> str:
    for seq in ("VerifyingObserverSequence", "AuthorObserverSequence"):
        if seq in ds and len(ds[seq].value) and "VerifyingObserverName" in ds[seq].value[0]:
            return str(ds[seq].value[0].VerifyingObserverName)
    return fallback


def read_report(path: Path, sop_class: str, fallback_signer: str) -> tuple[str, bytes | None, str]:
    """(text, pdf, radiologist) from a stored SR or Encapsulated PDF (blocking)."""
    ds = dcmread(path)
    signer = _signer(ds, fallback_signer)
    if sop_class == PDF_CLASS:
        pdf = bytes(ds.EncapsulatedDocument).rstrip(b"\x00")
        return str(ds.get("DocumentTitle", "") or ""), pdf, signer
    return "\n\n".join(_texts(ds.get("ContentSequence", []))), None, signer


async def file_dicom_report(hub: Hub, instance_id: int) -> None:
    async with hub.transaction() as session:
        inst = await session.get(Instance, instance_id)
        if inst is None or (inst.sop_class_uid not in SR_CLASSES and inst.sop_class_uid != PDF_CLASS):
            return
        exists = await session.scalar(select(CaseReport.id).where(CaseReport.sop_instance_uid == inst.sop_instance_uid))
        if exists is not None:
            return
        rows = (await session.execute(
            select(Case, Company).join(Company, Company.id == Case.company_id)
            .where(Case.study_id == inst.study_id,
                   Case.status.in_((CaseStatus.ROUTED, CaseStatus.DELIVERED, CaseStatus.REPORTED)))
            .order_by(Case.id.desc()))).all()
        case = next((c for c, company in rows if report_ae_of(company) == inst.calling_ae), None)
        if case is None:
            return  # an SR from the practice itself, or from nobody reading this study
        path = storage_root(hub) / inst.path
        try:
            text, pdf, signer = await asyncio.to_thread(read_report, path, inst.sop_class_uid, inst.calling_ae)
        except Exception:  # noqa: BLE001 - a malformed object stays stored; the case stays open
            log.exception("case %s: the report object %s could not be read", case.id, inst.sop_instance_uid)
            return
        await add_report(session, hub, case, text=text or "(see the PDF)", radiologist=signer,
                         pdf=pdf, actor=f"dicom:{inst.calling_ae}", source="dicom",
                         sop_instance_uid=inst.sop_instance_uid)
