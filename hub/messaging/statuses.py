"""Hub communication statuses and their forward-only order.

Providers' callbacks arrive late, twice and out of order (Twilio says so; Lob retries). A
communication's status only ever moves to a status of a higher rank; anything else is still kept
in the history but does not change the current status.

Ranks group statuses by how far the message got. Terminal outcomes share the top ranks so that,
for example, "delivered" after "undelivered" is ignored, while "read" may follow "delivered".
"""

from __future__ import annotations

from enum import StrEnum


class CommStatus(StrEnum):
    """Communication.status (and each CommunicationStatus row): the hub's own wording."""

    QUEUED = "queued"
    DEFERRED = "deferred"
    SUPPRESSED = "suppressed"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    OPENED = "opened"
    CLICKED = "clicked"
    BOUNCED = "bounced"
    FAILED = "failed"
    UNDELIVERED = "undelivered"
    PROCESSED = "processed"
    MAILED = "mailed"
    IN_TRANSIT = "in_transit"
    IN_LOCAL_AREA = "in_local_area"
    PROCESSED_FOR_DELIVERY = "processed_for_delivery"
    RE_ROUTED = "re_routed"
    RETURNED_TO_SENDER = "returned_to_sender"
    CANCELED = "canceled"
    READ = "read"


# the names this module has always had
QUEUED = CommStatus.QUEUED
DEFERRED = CommStatus.DEFERRED
SUPPRESSED = CommStatus.SUPPRESSED
SENDING = CommStatus.SENDING
SENT = CommStatus.SENT
DELIVERED = CommStatus.DELIVERED
OPENED = CommStatus.OPENED
CLICKED = CommStatus.CLICKED
BOUNCED = CommStatus.BOUNCED
FAILED = CommStatus.FAILED
UNDELIVERED = CommStatus.UNDELIVERED
PROCESSED = CommStatus.PROCESSED
MAILED = CommStatus.MAILED
IN_TRANSIT = CommStatus.IN_TRANSIT
IN_LOCAL_AREA = CommStatus.IN_LOCAL_AREA
PROCESSED_FOR_DELIVERY = CommStatus.PROCESSED_FOR_DELIVERY
RE_ROUTED = CommStatus.RE_ROUTED
RETURNED_TO_SENDER = CommStatus.RETURNED_TO_SENDER
CANCELED = CommStatus.CANCELED
READ = CommStatus.READ

RANK: dict[str, int] = {
    DEFERRED: 5,  # waiting for quiet hours to end; may go back to queued
    QUEUED: 10,
    SENDING: 20,
    # accepted by the provider
    SENT: 30,
    PROCESSED: 30,  # Lob accepted the postcard
    MAILED: 40,
    IN_TRANSIT: 50,
    IN_LOCAL_AREA: 55,
    RE_ROUTED: 56,
    PROCESSED_FOR_DELIVERY: 60,
    # final outcomes
    DELIVERED: 80,
    OPENED: 85,
    CLICKED: 90,
    READ: 90,
    SUPPRESSED: 100,  # verdict said no: never sent
    CANCELED: 100,
    FAILED: 100,
    BOUNCED: 100,
    UNDELIVERED: 100,
    RETURNED_TO_SENDER: 100,
}

ALL_STATUSES: frozenset[str] = frozenset(RANK)

#: Statuses after which nothing more will happen.
TERMINAL: frozenset[str] = frozenset(
    {SUPPRESSED, CANCELED, FAILED, BOUNCED, UNDELIVERED, RETURNED_TO_SENDER}
)

#: Statuses meaning the message did not reach the person.
FAILURES: frozenset[str] = frozenset({FAILED, BOUNCED, UNDELIVERED, RETURNED_TO_SENDER})


def is_known(status: str) -> bool:
    return status in RANK


def is_forward(current: str | None, new: str) -> bool:
    """True when moving from ``current`` to ``new`` goes forward.

    Unknown statuses raise ``ValueError``. Moving to the same status is not forward (a
    duplicate callback). Deferred → queued is the one allowed step "down" in rank: a deferred
    message is re-queued when quiet hours end (deferred has the lowest rank, so it is forward
    anyway).
    """
    if new not in RANK:
        raise ValueError(f"unknown communication status {new!r}")
    if current is None:
        return True
    if current not in RANK:
        raise ValueError(f"unknown communication status {current!r}")
    if current in TERMINAL:
        return False
    return RANK[new] > RANK[current]
