"""The onboarding report: one row per account request, its stages, the days between them.

Rendering only (pure functions over :class:`OnboardingRow`); the rows are gathered by
``hub.accounts.service.onboarding_rows``. Formats: JSON, CSV, PDF (fpdf2, pure Python; call it
in an executor from async code) and HTML with a print stylesheet.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

#: Stages in the order a request goes through them.
STAGES: tuple[str, ...] = (
    "requested",
    "information_requested",
    "account_created",
    "welcome_sent",
    "password_set",
    "first_images_received",
    "first_case_submitted",
)

STAGE_LABELS: dict[str, str] = {
    "requested": "Requested",
    "information_requested": "Information requested",
    "account_created": "Account created",
    "welcome_sent": "Welcome sent",
    "password_set": "Password set",
    "first_images_received": "First images",
    "first_case_submitted": "First case",
}

FORMATS: tuple[str, ...] = ("json", "csv", "pdf", "html")
CONTENT_TYPES: dict[str, str] = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "pdf": "application/pdf",
    "html": "text/html; charset=utf-8",
}

_TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class OnboardingRow:
    """One account request's line in the onboarding report, with when it reached each stage."""
    request_id: int
    practice: str
    company: str
    state: str
    stages: dict[str, datetime | None]
    account_id: int | None = None

    def days_between(self) -> dict[str, float | None]:
        """For each stage after "requested": days since the previous stage that was reached
        (``None`` when this stage was not reached). "information_requested" is skipped over when
        a request was complete at once."""
        out: dict[str, float | None] = {}
        previous = self.stages.get("requested")
        for stage in STAGES[1:]:
            at = self.stages.get(stage)
            if at is None or previous is None:
                out[stage] = None
            else:
                out[stage] = round((at - previous).total_seconds() / 86400, 1)
            if at is not None:
                previous = at
        return out

    def total_days(self) -> float | None:
        start = self.stages.get("requested")
        reached = [at for s in STAGES if (at := self.stages.get(s)) is not None]
        if start is None or not reached:
            return None
        return round((max(reached) - start).total_seconds() / 86400, 1)

    def as_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "account_id": self.account_id,
            "practice": self.practice,
            "company": self.company,
            "state": self.state,
            "stages": {s: _iso(self.stages.get(s)) for s in STAGES},
            "days_between": self.days_between(),
            "total_days": self.total_days(),
        }


@dataclass(frozen=True)
class OnboardingReport:
    """The onboarding report for a period, ready to render as JSON, CSV, HTML or PDF."""
    rows: Sequence[OnboardingRow]
    date_from: date | None = None
    date_to: date | None = None
    company: str | None = None
    generated_at: datetime | None = None
    title: str = "Onboarding report"
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "company": self.company,
            "from": self.date_from.isoformat() if self.date_from else None,
            "to": self.date_to.isoformat() if self.date_to else None,
            "generated_at": _iso(self.generated_at),
            "stages": list(STAGES),
            "items": [r.as_dict() for r in self.rows],
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _short(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d") if value is not None else ""


def _days(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def csv_header() -> list[str]:
    head = ["request_id", "account_id", "practice", "company", "state"]
    head += [f"{s}_at" for s in STAGES]
    head += [f"days_to_{s}" for s in STAGES[1:]]
    head.append("total_days")
    return head


def render_json(report: OnboardingReport) -> bytes:
    return json.dumps(report.as_dict(), indent=2).encode()


def render_csv(report: OnboardingReport) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(csv_header())
    for r in report.rows:
        days = r.days_between()
        w.writerow(
            [r.request_id, r.account_id or "", r.practice, r.company, r.state]
            + [_iso(r.stages.get(s)) or "" for s in STAGES]
            + [_days(days[s]) for s in STAGES[1:]]
            + [_days(r.total_days())]
        )
    return buf.getvalue().encode("utf-8")


def _period(report: OnboardingReport) -> str:
    a = report.date_from.isoformat() if report.date_from else "start"
    b = report.date_to.isoformat() if report.date_to else "today"
    return f"{a} to {b}"


def render_html(report: OnboardingReport) -> bytes:
    env = Environment(
        loader=FileSystemLoader(_TEMPLATES), autoescape=select_autoescape(("html", "j2"))
    )
    tpl = env.get_template("report_onboarding.html.j2")
    rows = []
    for r in report.rows:
        days = r.days_between()
        rows.append(
            {
                "row": r,
                "cells": [
                    (_short(r.stages.get(s)), _days(days.get(s)) if s != "requested" else "")
                    for s in STAGES
                ],
                "total": _days(r.total_days()),
            }
        )
    html = tpl.render(
        report=report,
        period=_period(report),
        stages=STAGES,
        labels=STAGE_LABELS,
        rows=rows,
        generated=_short(report.generated_at),
    )
    return html.encode("utf-8")


def render_pdf(report: OnboardingReport) -> bytes:
    """A landscape A4 table; CPU-bound, so async callers run it in an executor."""
    from fpdf import FPDF  # imported here: only the PDF path needs it

    pdf = FPDF(orientation="L", unit="mm", format="A4")
    pdf.set_auto_page_break(auto=True, margin=12)
    pdf.set_title(report.title)
    pdf.set_creator("VetHub")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 14)
    heading = report.title + (f" - {report.company}" if report.company else "")
    pdf.cell(0, 8, _latin1(heading), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 9)
    pdf.cell(
        0,
        6,
        _latin1(f"Requests from {_period(report)}; {len(report.rows)} request(s)."),
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.ln(2)
    pdf.set_font("Helvetica", "", 7)
    headings = ["Practice", "State"] + [STAGE_LABELS[s] for s in STAGES] + ["Total days"]
    widths = (44, 24, 24, 27, 24, 24, 24, 24, 24, 18)
    with pdf.table(
        col_widths=widths,
        text_align="LEFT",
        line_height=4.2,
        first_row_as_headings=True,
        repeat_headings=1,
    ) as table:
        head = table.row()
        for h in headings:
            head.cell(h)
        for r in report.rows:
            days = r.days_between()
            row = table.row()
            row.cell(_latin1(r.practice))
            row.cell(_latin1(r.state.replace("_", " ")))
            for s in STAGES:
                at = _short(r.stages.get(s))
                d = days.get(s) if s != "requested" else None
                row.cell(at + (f"\n+{_days(d)} d" if d is not None else ""))
            row.cell(_days(r.total_days()))
    return bytes(pdf.output())


def _latin1(text: str) -> str:
    # The core PDF fonts are Latin-1; anything else is replaced rather than failing the report.
    return text.encode("latin-1", "replace").decode("latin-1")


RENDERERS = {"json": render_json, "csv": render_csv, "pdf": render_pdf, "html": render_html}


def render(report: OnboardingReport, fmt: str) -> bytes:
    try:
        return RENDERERS[fmt](report)
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}") from None
