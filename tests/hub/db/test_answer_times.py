"""Timestamps read for answers (hub.db.types.AnswerTime, IsoformatTime) are the strings the
aware datetime would have written, for every form SQLite may hold."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic_core import to_json

from hub.db.types import _isoformat, _sqlite_answer_time, _sqlite_isoformat

STORED = ["2026-12-07 12:26:15.120654", "2026-12-07 12:26:15.000000", "2026-12-07 12:26:15.100000",
          "2026-12-07 12:26:15", "2026-12-07T12:26:15", "2026-12-07 12:26:15.5", "2026-12-07 12:26"]


@pytest.mark.parametrize("stored", STORED)
def test_a_stored_timestamp_reads_as_the_aware_datetime_writes(stored: str) -> None:
    aware = datetime.fromisoformat(stored).replace(tzinfo=UTC)
    assert to_json(_sqlite_answer_time(stored)) == to_json(aware)
    assert _sqlite_isoformat(stored) == aware.isoformat()
    assert _isoformat(aware) == aware.isoformat()


def test_null_stays_null() -> None:
    assert _sqlite_answer_time(None) is None and _sqlite_isoformat(None) is None and _isoformat(None) is None
