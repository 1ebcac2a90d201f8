"""`vethub report onboarding --company C --from --to --format csv|pdf`, as an operator runs it."""

from __future__ import annotations

import asyncio
import csv
import io
import sys
from pathlib import Path

from .accounts_world import World


async def vethub(*args: str) -> tuple[int, bytes, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from hub.cli import main; main()", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode, out, err.decode()


async def test_report_onboarding_command(world: World, write_config, tmp_path: Path) -> None:
    for company, name in (("read-right", "Elm Vets"), ("read-right", "Oak Vets"), ("scan-co", "Pine Vets")):
        r = await world.api.post("/api/account-requests",
                                 json={"company": company, "practice_name": name, "email": "a@b.example"})
        assert r.status == 201
        world.clock.advance(days=1)
    config = str(write_config({}))

    code, out, err = await vethub("report", "onboarding", "--config", config, "--company", "read-right",
                                  "--from", "2026-03-01", "--to", "2026-03-31", "--format", "csv")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out.decode())))
    assert [r["practice"] for r in rows] == ["Elm Vets", "Oak Vets"]
    assert rows[0]["state"] == "information_requested"

    pdf = tmp_path / "onboarding.pdf"
    code, _, err = await vethub("report", "onboarding", "--config", config, "--company", "read-right",
                                "--format", "pdf", "--output", str(pdf))
    assert code == 0, err
    assert pdf.read_bytes().startswith(b"%PDF-")

    # without --company, every company's requests (an operator's view)
    code, out, err = await vethub("report", "onboarding", "--config", config,
                                  "--from", "2026-03-01", "--to", "2026-03-31", "--format", "csv")
    assert code == 0, err
    assert sorted(r["practice"] for r in csv.DictReader(io.StringIO(out.decode()))) == [
        "Elm Vets", "Oak Vets", "Pine Vets"]

    code, _, err = await vethub("report", "onboarding", "--config", config, "--company", "nobody")
    assert code == 1 and "not found" in err
    code, _, err = await vethub("report", "onboarding", "--config", config, "--company", "read-right",
                                "--from", "March")
    assert code == 2 and "YYYY-MM-DD" in err
