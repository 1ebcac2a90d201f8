"""The forwarder: sends a routed case's instances to its company's DICOM peer by C-STORE.

One durable job per case (``dicom.forward_case``). Each run sends the instances that have not
yet been accepted, those never tried first, and the request objects (:mod:`.request_object`),
over one association, the files' data sets as stored (no re-encoding), and records the peer's
answer for each instance as it arrives (so a case's progress shows while it is sent). The case
is ``delivered`` only when every
instance got Success or a Warning (recorded as such); otherwise the job fails and is retried
with backoff, and at its last attempt the case is marked ``failed`` (the job goes to the dead
letter, where an operator can replay it).

The destination is the company's ``settings["dicom_destination"] = {"host", "port",
"ae_title"}``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pynetdicom.presentation import build_context

from hub.imaging.forwarding import (
    Destination,
    ForwardRefused,
    plan_forward,
    record_forward,
    record_instance,
)
from hub.imaging.models import FWD_FAILED, FWD_SUCCESS, FWD_WARNING
from hub.jobs import PermanentJobError

from .config import DicomConfig
from .pynetdicom_shim import NoDelayAE, send_files_as_stored
from .request_object import add_request_objects

if TYPE_CHECKING:
    from hub.core import Hub
    from hub.jobs import JobContext

log = logging.getLogger(__name__)

MAX_CONTEXTS = 128
ASSOCIATE_TIMEOUT = 10.0  # seconds to connect and negotiate, at most


class ForwardIncomplete(Exception):
    """Some instances were not accepted; the job retries with backoff."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One stored instance to send to the company's peer, with the syntaxes to offer for it."""
    instance_id: int
    path: Path
    sop_class_uid: str
    transfer_syntax_uid: str


@dataclass
class SendReport:
    """What one forwarding association achieved: its error, and the status of each instance sent."""
    association_error: str | None = None
    statuses: dict[int, tuple[int | None, str | None]] = field(default_factory=dict)
    recorded: set[int] = field(default_factory=set)  # statuses already written as they came


def category(code: int | None) -> str:
    if code is None:
        return FWD_FAILED
    if code == 0x0000:
        return FWD_SUCCESS
    if code == 0x0001 or 0xB000 <= code <= 0xBFFF:
        return FWD_WARNING
    return FWD_FAILED


# Called from the sending thread with each answer as it arrives: (instance id, code, comment).
OnStatus = Callable[[int, int | None, str | None], None]


def send_instances(
    dest: Destination, items: list[Outgoing], *, calling_ae: str, timeout: float,
    on_status: OnStatus | None = None,
) -> SendReport:
    """Blocking: C-STORE each item to ``dest`` in order, over as few associations as the peer
    allows (run it in a thread).

    An instance the peer does not answer within ``timeout`` costs that much once: pynetdicom
    aborts the association, the instance is recorded as failed, and a new association (with a
    short timeout of its own, :data:`ASSOCIATE_TIMEOUT`) carries on with the rest. A peer that
    is gone shows there: the attempt stops, and the instances not sent stay pending, to go
    first next time.
    """
    send_files_as_stored()  # the data sets as stored, never decoded and re-encoded
    report = SendReport()

    def answer(item: Outgoing, code: int | None, comment: str | None) -> None:
        report.statuses[item.instance_id] = (code, comment)
        # Request objects (negative ids) have no row of their own: the end of the attempt
        # checks that they arrived too.
        if on_status is not None and item.instance_id > 0:
            try:
                on_status(item.instance_id, code, comment)
                report.recorded.add(item.instance_id)
            except Exception:  # recorded with the rest at the end instead
                log.exception("could not record instance %s's forward status", item.instance_id)

    sendable: list[Outgoing] = []
    for item in items:
        if item.path.is_file():
            sendable.append(item)
        else:
            answer(item, None, "stored file is missing")
    # The contexts the first instances in the queue need; past MAX_CONTEXTS the rest wait
    # (pending, never tried) for a later attempt, where they come first.
    pairs = list(dict.fromkeys((i.sop_class_uid, i.transfer_syntax_uid) for i in sendable))
    if len(pairs) > MAX_CONTEXTS:
        allowed = set(pairs[:MAX_CONTEXTS])
        pairs = pairs[:MAX_CONTEXTS]
        sendable = [i for i in sendable if (i.sop_class_uid, i.transfer_syntax_uid) in allowed]
    queue = list(sendable)
    sent = 0
    while queue:
        assoc = _associate(dest, pairs, calling_ae, timeout)
        if isinstance(assoc, str):
            report.association_error = assoc if not sent else (
                f"{assoc}, after {sent} of {len(sendable)} instance(s) were answered"
            )
            break
        try:
            while queue and assoc.is_established:
                item = queue.pop(0)
                code, comment = _store(assoc, item, sent + 1)
                answer(item, code, comment)
                sent += 1
        finally:
            if assoc.is_established:
                assoc.release()
    return report


def _associate(dest: Destination, pairs: list[tuple[str, str]], calling_ae: str,
               timeout: float) -> Any:
    """An established association with ``dest``, or why there is none."""
    ae = NoDelayAE(ae_title=calling_ae)
    ae.dimse_timeout = ae.network_timeout = timeout
    # Connecting and negotiating take a moment with a live peer; a peer that is gone (or
    # hangs before accepting) is found out in ASSOCIATE_TIMEOUT rather than the full timeout.
    ae.connection_timeout = ae.acse_timeout = min(timeout, ASSOCIATE_TIMEOUT)
    ae.maximum_pdu_size = 131072
    # One context per (SOP class, transfer syntax): the acceptor picks one syntax per context.
    contexts = [build_context(sop, ts) for sop, ts in pairs]
    assoc = ae.associate(dest.host, dest.port, contexts=contexts, ae_title=dest.ae_title)
    if assoc.is_established:
        return assoc
    if assoc.is_rejected:
        return f"association rejected by {dest}"
    return f"could not associate with {dest} (down or aborted)"


def _store(assoc: Any, item: Outgoing, n: int) -> tuple[int | None, str | None]:
    try:
        rsp = assoc.send_c_store(item.path, msg_id=n % 65536 or 1)
    except ValueError as err:  # no accepted presentation context for it
        return None, f"not sent: {err}"[:200]
    code = int(rsp.Status) if "Status" in rsp else None
    comment = str(rsp.get("ErrorComment", "")) or (
        None if code is not None else "no response from the peer"
    )
    return code, comment


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
    loop = asyncio.get_running_loop()

    async def _record(instance_id: int, code: int | None, comment: str | None) -> None:
        async with hub.transaction() as session:
            await record_instance(session, hub, case_id, instance_id, code, comment, category)

    def on_status(instance_id: int, code: int | None, comment: str | None) -> None:
        asyncio.run_coroutine_threadsafe(_record(instance_id, code, comment), loop).result(60)

    report = SendReport()
    if plan.items:
        todo = [Outgoing(i.instance_id, root / i.path, i.sop_class_uid, i.transfer_syntax_uid)
                for i in plan.items]
        report = await asyncio.to_thread(
            send_instances, plan.destination, todo, calling_ae=config.ae_title,
            timeout=config.forward_timeout, on_status=on_status,
        )
    rest = {k: v for k, v in report.statuses.items() if k not in report.recorded}
    async with hub.transaction() as session:
        why = await record_forward(
            session, hub, case_id, plan.destination, rest, category,
            association_error=report.association_error, attempt=job.attempts,
            max_attempts=job.max_attempts,
        )
    if why is not None:
        raise ForwardIncomplete(why)
