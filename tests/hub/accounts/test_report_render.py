"""The onboarding report's rows and its four renderings (pure, no database)."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, date, datetime, timedelta

import pytest

from hub.accounts import report
from hub.accounts.report import STAGES, OnboardingReport, OnboardingRow

T0 = datetime(2026, 2, 1, 10, 0, tzinfo=UTC)
D = timedelta(days=1)

COMPLETE = OnboardingRow(
    request_id=1,
    account_id=7,
    practice="Elm Street Vets",
    company="ReadRight",
    state="active",
    stages={
        "requested": T0,
        "information_requested": T0 + D,
        "account_created": T0 + 3 * D,
        "welcome_sent": T0 + 3 * D,
        "password_set": T0 + 4 * D + timedelta(hours=12),
        "first_images_received": T0 + 6 * D,
        "first_case_submitted": T0 + 10 * D,
    },
)
FAST = OnboardingRow(
    request_id=2,
    practice="Zoë's Clinic",  # non-Latin-1-safe name in PDF core fonts
    company="ReadRight",
    state="account_created",
    stages={"requested": T0, "account_created": T0 + 2 * D, "welcome_sent": T0 + 2 * D},
)
WAITING = OnboardingRow(
    request_id=3,
    practice="",
    company="ReadRight",
    state="information_requested",
    stages={"requested": T0, "information_requested": T0},
)

REPORT = OnboardingReport(
    rows=[COMPLETE, FAST, WAITING],
    date_from=date(2026, 1, 1),
    date_to=date(2026, 3, 1),
    company="ReadRight",
    generated_at=T0 + 30 * D,
)

DAYS = [
    (
        "complete",
        COMPLETE,
        {
            "information_requested": 1.0,
            "account_created": 2.0,
            "welcome_sent": 0.0,
            "password_set": 1.5,
            "first_images_received": 1.5,
            "first_case_submitted": 4.0,
        },
        10.0,
    ),
    (
        "skips-information-requested",
        FAST,
        {
            "information_requested": None,
            "account_created": 2.0,
            "welcome_sent": 0.0,
            "password_set": None,
            "first_images_received": None,
            "first_case_submitted": None,
        },
        2.0,
    ),
    ("waiting", WAITING, dict.fromkeys(STAGES[1:]) | {"information_requested": 0.0}, 0.0),
]


@pytest.mark.parametrize(("row", "days", "total"), [d[1:] for d in DAYS], ids=[d[0] for d in DAYS])
def test_days_between_stages(row: OnboardingRow, days: dict, total: float) -> None:
    assert row.days_between() == days
    assert row.total_days() == total


def test_json() -> None:
    data = json.loads(report.render(REPORT, "json"))
    assert data["from"] == "2026-01-01" and data["to"] == "2026-03-01"
    assert data["stages"] == list(STAGES)
    first = data["items"][0]
    assert first["practice"] == "Elm Street Vets"
    assert first["stages"]["first_case_submitted"] == (T0 + 10 * D).isoformat()
    assert first["days_between"]["first_case_submitted"] == 4.0
    assert data["items"][1]["stages"]["password_set"] is None


def test_csv() -> None:
    rows = list(csv.DictReader(io.StringIO(report.render(REPORT, "csv").decode())))
    assert len(rows) == 3
    assert rows[0]["practice"] == "Elm Street Vets"
    assert rows[0]["account_created_at"] == (T0 + 3 * D).isoformat()
    assert rows[0]["days_to_password_set"] == "1.5"
    assert rows[1]["password_set_at"] == "" and rows[1]["days_to_password_set"] == ""
    assert rows[1]["practice"] == "Zoë's Clinic"
    assert rows[2]["state"] == "information_requested"


def test_html_has_print_stylesheet_and_escapes() -> None:
    evil = OnboardingRow(
        request_id=9,
        practice="<script>x</script>",
        company="c",
        state="requested",
        stages={"requested": T0},
    )
    html = report.render(OnboardingReport(rows=[COMPLETE, evil]), "html").decode()
    assert "@media print" in html
    assert "Elm Street Vets" in html
    assert "<script>x</script>" not in html and "&lt;script&gt;" in html
    assert "First case" in html and "(+4 d)" in html


def test_html_empty() -> None:
    html = report.render(OnboardingReport(rows=[]), "html").decode()
    assert "No requests in this period." in html


def test_pdf_is_a_pdf_with_the_rows() -> None:
    data = report.render(REPORT, "pdf")
    assert data.startswith(b"%PDF-")
    assert data.rstrip().endswith(b"%%EOF")
    # many rows spill onto further pages
    many = report.render(OnboardingReport(rows=[COMPLETE] * 120), "pdf")
    assert len(re.findall(rb"/Type /Page\b", many)) > 1


def test_pdf_text_is_extractable() -> None:
    pytest.importorskip("fpdf")
    data = report.render(OnboardingReport(rows=[COMPLETE]), "pdf")
    # fpdf2 compresses page streams; check the uncompressed content
    import zlib

    texts = []
    for chunk in data.split(b"stream\n")[1:]:
        body = chunk.split(b"\nendstream")[0]
        try:
            texts.append(zlib.decompress(body))
        except zlib.error:
            continue
    joined = b"".join(texts)
    assert b"Elm Street Vets" in joined


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        report.render(REPORT, "xml")
