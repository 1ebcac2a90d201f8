"""The hand-off journal: which messages were handed to a provider, and which it accepted.

A hub killed between a provider's "accepted" and the commit that records ``sent`` used to send
every ``sending`` message again, so one kill could duplicate as many messages as the workers
held (the claim batch), though only those on the wire could have arrived. Now each message
writes two lines to ``<data_dir>/messaging/handoff.log``:

- ``H <id>`` when the channel hands it to the server (SMTP: before ``MAIL FROM``, on a
  connection of its own), through :attr:`OutboundMessage.on_handed`;
- ``A <id> <status> <provider id>`` as soon as the provider accepted it, before the database
  write.

A line is one ``write()`` to a file opened ``O_APPEND``: it is in the kernel, and survives the
process being killed, without an fsync per message (the database's own ``synchronous=NORMAL``
does not survive a power cut either). A replayed send job whose message has an ``A`` line
records ``sent`` without sending. So the only messages sent twice are those with an ``H`` and
no ``A``: handed to the server and not yet confirmed — at most two per SMTP connection. At
start the journal is cut down to the messages still ``sending`` and their number is logged.

Scope: one process's data dir. A job taken over by another replica (PostgreSQL, several hubs)
does not see this journal and sends again, as before.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import select

from hub.messaging.models import Communication
from hub.messaging.statuses import CommStatus
from hub.state import HubKey

log = logging.getLogger(__name__)

JOURNAL: HubKey[HandoffJournal] = HubKey("messaging.handoff_journal")
LOADING: HubKey[asyncio.Lock] = HubKey("messaging.handoff_loading")


class HandoffJournal:
    """One process's append-only hand-off journal, so a restart does not resend accepted mail."""
    def __init__(self, path: Path) -> None:
        self.path = path
        self.accepted: dict[int, tuple[str, str]] = {}  # id -> (status, provider id)
        self.handed: set[int] = set()
        self._fd: int | None = None
        self._lock = threading.Lock()

    def _write(self, line: str) -> None:
        with self._lock:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            os.write(self._fd, line.encode())

    def record_handed(self, comm_id: int) -> None:
        self.handed.add(comm_id)
        self._write(f"H {comm_id}\n")

    def record_accepted(self, comm_id: int, status: str, provider_id: str | None) -> None:
        if not provider_id or any(c.isspace() for c in provider_id):
            return  # nothing to replay without an id
        self.accepted[comm_id] = (status, provider_id)
        self._write(f"A {comm_id} {status} {provider_id}\n")

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _read(self) -> None:
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return
        for line in text.splitlines():
            parts = line.split(" ")
            try:
                if parts[0] == "H" and len(parts) == 2:
                    self.handed.add(int(parts[1]))
                elif parts[0] == "A" and len(parts) == 4:
                    self.accepted[int(parts[1])] = (parts[2], parts[3])
            except ValueError:
                continue  # a line cut short by a crash


async def open_journal(hub: Any) -> HandoffJournal:
    """The hub's journal, read and compacted on first use (at start-up)."""
    journal = hub.state.get(JOURNAL)
    if journal is not None:
        return journal
    async with hub.state.setdefault(LOADING, asyncio.Lock):
        journal = hub.state.get(JOURNAL)
        return journal if journal is not None else await _load(hub)


async def _load(hub: Any) -> HandoffJournal:
    journal = HandoffJournal(Path(hub.data_dir) / "messaging" / "handoff.log")
    journal._read()
    ids = journal.handed | set(journal.accepted)
    sending: set[int] = set()
    if ids:
        async with hub.sessionmaker() as session:
            for chunk in [sorted(ids)[i:i + 500] for i in range(0, len(ids), 500)]:
                sending |= set((await session.execute(select(Communication.id).where(
                    Communication.id.in_(chunk), Communication.status == CommStatus.SENDING))).scalars())
    journal.handed &= sending
    journal.accepted = {k: v for k, v in journal.accepted.items() if k in sending}
    exposed = journal.handed - set(journal.accepted)
    if exposed:
        log.warning("%d message(s) were handed to a provider when the hub stopped, without its answer "
                    "being recorded; they are sent again and may arrive twice (ids %s)",
                    len(exposed), ", ".join(map(str, sorted(exposed)[:20])))
    if journal.accepted:
        log.info("%d message(s) accepted before the hub stopped will be recorded sent, not sent again",
                 len(journal.accepted))
    _compact(journal)
    hub.state[JOURNAL] = journal
    return journal


def _compact(journal: HandoffJournal) -> None:
    tmp = journal.path.with_suffix(".tmp")
    lines = [f"H {i}\n" for i in sorted(journal.handed)]
    lines += [f"A {i} {s} {p}\n" for i, (s, p) in sorted(journal.accepted.items())]
    journal.path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text("".join(lines), encoding="utf-8")
    os.replace(tmp, journal.path)


def close_journal(hub: Any) -> None:
    journal = hub.state.pop(JOURNAL)
    if journal is not None:
        journal.close()
