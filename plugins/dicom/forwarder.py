"""The forwarder: sends a routed case's instances to its company's DICOM peer by C-STORE.

One durable job per case (``dicom.forward_case``). Each run sends the instances that have not
yet been accepted and the request objects (:mod:`.request_object`), over one association, the files' data sets as stored (no re-encoding),
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
from typing import TYPE_CHECKING

from pynetdicom import _config
from pynetdicom.presentation import build_context

from hub.imaging.forwarding import Destination, ForwardRefused, plan_forward, record_forward
from hub.imaging.models import FWD_FAILED, FWD_SUCCESS, FWD_WARNING
from hub.jobs import PermanentJobError

from .config import DicomConfig
from .net import NoDelayAE
from .request_object import add_request_objects

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
class Outgoing:
    instance_id: int
    path: Path
    sop_class_uid: str
    transfer_syntax_uid: str


@dataclass
class SendReport:
    association_error: str | None = None
    statuses: dict[int, tuple[int | None, str | None]] = field(default_factory=dict)


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
    refused: ForwardRefused | None = None
    async with hub.transaction() as session:
        try:
            plan = await plan_forward(session, hub, case_id)
        except ForwardRefused as err:
            refused = err  # raised after the commit, so the case keeps its failed status
    if refused is not None:
        raise PermanentJobError(str(refused)) from refused
    if plan is None:
        return
    await asyncio.to_thread(add_request_objects, plan, root)  # the request travels with the images
    report = SendReport()
    if plan.items:
        todo = [Outgoing(i.instance_id, root / i.path, i.sop_class_uid, i.transfer_syntax_uid) for i in plan.items]
        report = await asyncio.to_thread(
            send_instances, plan.destination, todo, calling_ae=config.ae_title, timeout=config.forward_timeout,
        )
    async with hub.transaction() as session:
        why = await record_forward(
            session, hub, case_id, plan.destination, report.statuses, category,
            association_error=report.association_error, attempt=job.attempts, max_attempts=job.max_attempts,
        )
    if why is not None:
        raise ForwardIncomplete(why)


