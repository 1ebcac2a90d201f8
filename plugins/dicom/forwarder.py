"""The forwarder: sends a routed case's instances to its company's DICOM peer by C-STORE.

One durable job per case (``dicom.forward_case``). Each run sends the instances that have not
yet been accepted, over one association, the files' data sets as stored (no re-encoding),
and records the peer's answer per instance. The case is ``delivered`` only when every
instance got Success or a Warning (recorded as such); otherwise the job fails and is retried
with backoff, and at its last attempt the case is marked ``failed`` (the job goes to the dead
letter, where an operator can replay it).

The destination is the company's ``settings["dicom_destination"] = {"host", "port",
"ae_title"}``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pynetdicom import _config
from pynetdicom.presentation import build_context
from sqlalchemy import select

from hub.db.models import Company
from hub.imaging.cases import add_status
from hub.imaging.models import (
    CASE_DELIVERED,
    CASE_FAILED,
    CASE_FORWARDING,
    FWD_FAILED,
    FWD_PENDING,
    FWD_SUCCESS,
    FWD_WARNING,
    Case,
    CaseInstanceForward,
    Instance,
)
from hub.jobs import PermanentJobError

from .config import DicomConfig
from .net import NoDelayAE

if TYPE_CHECKING:
    from hub.core import Hub
    from hub.jobs import JobContext

log = logging.getLogger(__name__)

# Send data sets from their files as stored, without decoding and re-encoding them.
_config.STORE_SEND_CHUNKED_DATASET = True

MAX_CONTEXTS = 128


class ForwardIncomplete(Exception):
    """Some instances were not accepted; the job retries with backoff."""


@dataclass(frozen=True, slots=True)
class Destination:
    host: str
    port: int
    ae_title: str

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Outgoing:
    instance_id: int
    path: Path
    sop_class_uid: str
    transfer_syntax_uid: str


@dataclass
class SendReport:
    association_error: str | None = None
    statuses: dict[int, tuple[int | None, str | None]] = field(default_factory=dict)


def destination_of(company: Company) -> Destination:
    raw = (company.settings or {}).get("dicom_destination")
    if not isinstance(raw, dict):
        raise PermanentJobError(f"company {company.slug} has no dicom_destination in its settings")
    try:
        dest = Destination(str(raw["host"]), int(raw["port"]), str(raw["ae_title"]).strip())
    except (KeyError, TypeError, ValueError) as err:
        raise PermanentJobError(
            f"company {company.slug}: dicom_destination needs host, port and ae_title ({err})"
        ) from err
    if not dest.ae_title or len(dest.ae_title) > 16 or not 0 < dest.port < 65536:
        raise PermanentJobError(f"company {company.slug}: invalid dicom_destination {raw!r}")
    return dest


def category(code: int | None) -> str:
    if code is None:
        return FWD_FAILED
    if code == 0x0000:
        return FWD_SUCCESS
    if code == 0x0001 or 0xB000 <= code <= 0xBFFF:
        return FWD_WARNING
    return FWD_FAILED


def send_instances(
    dest: Destination, items: list[Outgoing], *, calling_ae: str, timeout: float
) -> SendReport:
    """Blocking: one association to ``dest``, one C-STORE per item (run it in a thread)."""
    report = SendReport()
    sendable: list[Outgoing] = []
    for item in items:
        if item.path.is_file():
            sendable.append(item)
        else:
            report.statuses[item.instance_id] = (None, "stored file is missing")
    pairs = sorted({(i.sop_class_uid, i.transfer_syntax_uid) for i in sendable})
    if len(pairs) > MAX_CONTEXTS:  # the rest go in a later attempt
        pairs = pairs[:MAX_CONTEXTS]
        allowed = set(pairs)
        for item in sendable:
            if (item.sop_class_uid, item.transfer_syntax_uid) not in allowed:
                report.statuses[item.instance_id] = (None, "not sent yet: over 128 contexts")
        sendable = [i for i in sendable if (i.sop_class_uid, i.transfer_syntax_uid) in allowed]
    if not sendable:
        return report

    ae = NoDelayAE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.maximum_pdu_size = 131072
    # One context per (SOP class, transfer syntax): the acceptor picks one syntax per context.
    contexts = [build_context(sop, ts) for sop, ts in pairs]
    assoc = ae.associate(dest.host, dest.port, contexts=contexts, ae_title=dest.ae_title)
    if not assoc.is_established:
        if assoc.is_rejected:
            report.association_error = f"association rejected by {dest}"
        else:
            report.association_error = f"could not associate with {dest} (down or aborted)"
        return report
    try:
        for n, item in enumerate(sendable, start=1):
            if not assoc.is_established:
                report.statuses[item.instance_id] = (None, "association ended before sending")
                continue
            try:
                rsp = assoc.send_c_store(item.path, msg_id=n % 65536 or 1)
            except ValueError as err:  # no accepted presentation context for it
                report.statuses[item.instance_id] = (None, f"not sent: {err}"[:200])
                continue
            code = int(rsp.Status) if "Status" in rsp else None
            comment = str(rsp.get("ErrorComment", "")) or (
                None if code is not None else "no response from the peer"
            )
            report.statuses[item.instance_id] = (code, comment)
    finally:
        if assoc.is_established:
            assoc.release()
    return report


async def forward_case(hub: Hub, job: JobContext) -> None:
    """Job handler for ``dicom.forward_case``; see the module docstring."""
    from .receiver import storage_root

    config: DicomConfig = hub.config.section("dicom") or DicomConfig()
    root = storage_root(hub, config)
    case_id = int(job.payload["case_id"])
    async with hub.transaction() as session:
        case = await session.get(Case, case_id)
        if case is None:
            raise PermanentJobError(f"case {case_id} does not exist")
        if case.status == CASE_DELIVERED:
            return
        company = await session.get(Company, case.company_id) if case.company_id else None
        if company is None:
            raise PermanentJobError(f"case {case_id} is not routed to a company")
        try:
            dest = destination_of(company)
        except PermanentJobError as err:
            no_destination = err
        else:
            no_destination = None
        if no_destination is not None:
            await add_status(session, hub, case, CASE_FAILED, note=str(no_destination))
    if no_destination is not None:  # after the commit, so the case keeps its failed status
        raise no_destination
    async with hub.transaction() as session:
        case = await session.get(Case, case_id)
        assert case is not None
        instances = (
            (
                await session.execute(
                    select(Instance).where(Instance.study_id == case.study_id).order_by(Instance.id)
                )
            )
            .scalars()
            .all()
        )
        rows = {
            r.instance_id: r
            for r in (
                await session.execute(
                    select(CaseInstanceForward).where(CaseInstanceForward.case_id == case.id)
                )
            ).scalars()
        }
        now = hub.clock.now()
        for inst in instances:
            if inst.id not in rows:
                row = CaseInstanceForward(
                    case_id=case.id,
                    instance_id=inst.id,
                    status=FWD_PENDING,
                    attempts=0,
                    updated_at=now,
                )
                session.add(row)
                rows[inst.id] = row
        todo = [
            Outgoing(inst.id, root / inst.path, inst.sop_class_uid, inst.transfer_syntax_uid)
            for inst in instances
            if rows[inst.id].status not in (FWD_SUCCESS, FWD_WARNING)
        ]
        if case.status != CASE_FORWARDING:
            await add_status(session, hub, case, CASE_FORWARDING, note=f"to {dest}")

    report = SendReport()
    if todo:
        report = await asyncio.to_thread(
            send_instances,
            dest,
            todo,
            calling_ae=config.ae_title,
            timeout=config.forward_timeout,
        )

    async with hub.transaction() as session:
        case = await session.get(Case, case_id)
        assert case is not None
        rows = {
            r.instance_id: r
            for r in (
                await session.execute(
                    select(CaseInstanceForward).where(CaseInstanceForward.case_id == case.id)
                )
            ).scalars()
        }
        now = hub.clock.now()
        for instance_id, (code, comment) in report.statuses.items():
            row = rows[instance_id]
            row.status = category(code)
            row.status_code = code
            row.comment = comment
            row.attempts += 1
            row.updated_at = now
        pending = [r for r in rows.values() if r.status not in (FWD_SUCCESS, FWD_WARNING)]
        summary = _summary(rows.values())
        if not pending:
            case.delivered_at = now
            await add_status(session, hub, case, CASE_DELIVERED, note=f"to {dest}: {summary}")
            return
        why = report.association_error or f"{len(pending)} instance(s) not accepted ({summary})"
        last = job.attempts >= job.max_attempts
        await add_status(
            session,
            hub,
            case,
            CASE_FAILED if last else CASE_FORWARDING,
            note=f"attempt {job.attempts} of {job.max_attempts}: {why}",
        )
    raise ForwardIncomplete(why)


def _summary(rows: Any) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
