"""Messages come from the practice: the sender identity of a practice's client messages.

The practice's name is the display name on every channel (email From, and the templates put it
at the head of every SMS and on every postcard); replies go to the practice (``reply_to`` in
``[clients.practices.<slug>]``, else the practice's email); and a practice may send from its
own address with its own DKIM key. Without those the hub's address and key are used.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from hub.clients.config import PracticeClientsConfig, clients_config
from hub.db.models import Practice
from hub.messaging.channel import Sender
from hub.state import HubKey

#: practice rows change rarely; a send job should not read one each time
TTL_SECONDS = 60.0
#: per practice id: when the sender was read, and the sender
SENDERS: HubKey[dict[int, tuple[float, Sender]]] = HubKey("clients.senders")
#: per practice id: the read under way, which every miss meanwhile waits for
READING: HubKey[dict[int, asyncio.Task[Sender | None]]] = HubKey("clients.senders_reading")
_KEYS: dict[tuple[str, float], bytes] = {}


def _dkim_key(cfg: PracticeClientsConfig, base: Path | None) -> bytes | None:
    if cfg.dkim_private_key is not None:
        return cfg.dkim_private_key.get_secret_value().encode()
    if not cfg.dkim_private_key_path:
        return None
    path = Path(cfg.dkim_private_key_path)
    if not path.is_absolute() and base is not None:
        path = base / path
    key = (str(path), path.stat().st_mtime)
    if key not in _KEYS:
        _KEYS[key] = path.read_bytes()
    return _KEYS[key]


def sender_of(hub: Any, practice: Practice) -> Sender:
    cfg = clients_config(hub).practice(practice.slug)
    key = _dkim_key(cfg, hub.config.path.parent if hub.config.path else None)
    domain = cfg.from_address.rpartition("@")[2] if cfg.from_address and key else None
    return Sender(display_name=practice.name, from_address=cfg.from_address,
                  reply_to=cfg.reply_to or practice.email, dkim_domain=domain,
                  dkim_selector=cfg.dkim_selector if key else None, dkim_key=key)


async def sender_for(hub: Any, practice_id: int | None) -> Sender | None:
    """The sender of a message of ``practice_id``'s (None for the hub's own mail).

    Misses at the same moment share one read: a worker's first claimed batch of a practice's
    messages (workers x ``claim_batch`` jobs) used to read the practice row once per job.
    """
    if practice_id is None:
        return None
    hit = hub.state.setdefault(SENDERS, dict).get(practice_id)
    if hit is not None and time.monotonic() - hit[0] < TTL_SECONDS:
        return hit[1]
    reading = hub.state.setdefault(READING, dict)
    task = reading.get(practice_id)
    if task is None:
        task = reading[practice_id] = asyncio.ensure_future(_read_sender(hub, practice_id))
        task.add_done_callback(lambda done: _read_done(reading, practice_id, done))
    # shielded: one waiter cancelled (its job stopped) does not cancel the others' read
    return await asyncio.shield(task)


async def _read_sender(hub: Any, practice_id: int) -> Sender | None:
    read_at = time.monotonic()
    practice = await hub.read_orm(lambda session: session.get(Practice, practice_id))
    if practice is None:
        return None
    sender = sender_of(hub, practice)
    hub.state.setdefault(SENDERS, dict)[practice_id] = (read_at, sender)
    return sender


def _read_done(reading: dict[int, asyncio.Task[Sender | None]], practice_id: int,
               task: asyncio.Task[Sender | None]) -> None:
    if reading.get(practice_id) is task:
        del reading[practice_id]
    if not task.cancelled():
        task.exception()  # retrieved: its waiters, if any are left, have it raised
