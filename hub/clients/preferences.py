"""A client's communication preferences: one answer per category and channel, read from and
written to the messaging domain's consent ledger (the same ledger the preference page, the
one-click unsubscribe and an SMS STOP write), so a "no" set anywhere holds everywhere."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from hub import audit
from hub.messaging import service
from hub.messaging.facts import load_consent, resolve_preference
from hub.pims.models import Client

#: the categories staff set; "account" (operational) mail is not a preference
CATEGORIES = ("reminder", "appointment", "survey", "loyalty", "marketing")
CHANNELS = ("email", "sms", "postcard")


@dataclass(frozen=True)
class Preference:
    """A client's effective choice for one category on one channel, and where it came from."""
    category: str
    channel: str
    #: True (yes), False (no) or None (never said: the default applies)
    allowed: bool | None
    source: str | None


async def preferences(session: AsyncSession, client_id: int) -> list[Preference]:
    rows = (await load_consent(session, [client_id])).get(client_id, [])
    out = []
    for category in CATEGORIES:
        for channel in CHANNELS:
            allowed, source = resolve_preference(rows, category, channel)
            out.append(Preference(category, channel, allowed, source))
    return out


async def set_preferences(session: AsyncSession, hub: Any, client: Client,
                          changes: Sequence[tuple[str, str, bool]], *, actor: str,
                          note: str = "") -> list[Preference]:
    """Append one ledger row per change that differs from the current answer (source
    ``staff``) and one audit entry with before and after."""
    before = {(p.category, p.channel): p.allowed for p in await preferences(session, client.id)}
    written = []
    for category, channel, allowed in changes:
        if before.get((category, channel)) is allowed:
            continue
        await service.record_consent(session, hub, client_id=client.id, category=category,
                                     channel=channel, allowed=allowed, source="staff",
                                     actor=actor, detail=note, practice_id=client.practice_id)
        written.append({"category": category, "channel": channel, "allowed": allowed,
                        "before": before.get((category, channel))})
    if written:
        await audit.record(session, actor, "client.preferences", "client", client.id,
                           before={f"{w['category']}/{w['channel']}": w["before"] for w in written},
                           after={f"{w['category']}/{w['channel']}": w["allowed"] for w in written},
                           practice_id=client.practice_id)
    return await preferences(session, client.id)
