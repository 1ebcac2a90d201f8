"""Cell parsers: the ISO-date fast path reads what strptime reads."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from connectors.file_export.formats import Parsers

CELLS = ["2026-01-05", "1999-12-31", "2024-02-29", "2026-1-5", "2026-02-30", "2023-02-29",
         "2026-13-01", "0000-01-01", "2026-00-10", " 2026-12-31 ", "2026/01/05", "2026-01-5 ",
         "٢٠٢٦-٠١-٠٥", "2026-01-0x", "+026-01-05"]


def _strptime(cell: str) -> date | str:
    try:
        return datetime.strptime(cell.strip(), "%Y-%m-%d").date()
    except ValueError:
        return "rejected"


@pytest.mark.parametrize("cell", CELLS)
def test_iso_date_fast_path_agrees_with_strptime(cell: str) -> None:
    try:
        got: date | str | None = Parsers("%Y-%m-%d", UTC).date(cell)
    except ValueError:
        got = "rejected"
    expected = _strptime(cell)
    # The parser's older fallback (ISO date at the start of the cell) may take a cell strptime
    # refuses; it must never read a cell differently from strptime.
    assert got == expected or (expected == "rejected" and got == date.fromisoformat(cell.strip()[:10]))


def test_other_formats_take_strptime() -> None:
    assert Parsers("%d/%m/%Y", UTC).date("05/01/2026") == date(2026, 1, 5)
    assert Parsers("%d-%m-%Y", UTC).date("05-01-2026") == date(2026, 1, 5)
