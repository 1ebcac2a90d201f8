"""Rows as a receiver hands them to its committer, for the committer and relay tests."""

from __future__ import annotations

from hub.db.models import Practice
from hub.imaging.service import ReceivedInstance


def received_item(practice_id: int, sop: str, study: str = "1.2.3") -> ReceivedInstance:
    return ReceivedInstance(
        practice_id=practice_id, calling_ae="SCANNER1", peer_address="127.0.0.1",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2", sop_instance_uid=sop,
        study_instance_uid=study, series_instance_uid=f"{study}.4",
        transfer_syntax_uid="1.2.840.10008.1.2.1", size_bytes=100,
        path=f"p{practice_id}/{study}/{study}.4/{sop}.dcm", modality="CT",
    )


async def second_practice(hub) -> int:
    """Another practice beside the fixtures' vet-one; its id."""
    async with hub.transaction() as s:
        other = Practice(slug="vet-two", name="Vet Two")
        s.add(other)
        await s.flush()
        return other.id
