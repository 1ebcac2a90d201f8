"""The file-export connector through the sync engine: full, then incremental, with bad rows."""

from __future__ import annotations

import csv
from pathlib import Path

from sqlalchemy import func, select

from hub.pims.models import Appointment, Client, Patient, Reminder, SyncReject
from hub.pims.sync import sync_practices
from hub.testing.exports import (
    CLIENT_COLUMNS,
    bad_rows,
    generate,
    make_stable,
    truncate,
    write_csv,
    write_export,
)


async def count(hub, model) -> int:
    async with hub.sessionmaker() as s:
        return (await s.execute(select(func.count()).select_from(model))).scalar_one()


async def test_full_then_incremental(hub_factory, pims_practice, drop_dir: Path) -> None:
    data = generate(120, seed=3)
    bad = bad_rows()
    data.clients += list(bad.values())
    make_stable(*write_export(drop_dir, data).values())
    hub = await hub_factory({"practices": [pims_practice([{"connector": "file_export",
                                                           "drop_dir": str(drop_dir)}])]})

    [run] = await sync_practices(hub, practice="oak")
    assert run.status == "succeeded", run.error
    assert run.counts["client"] == {"inserted": 120, "updated": 0, "unchanged": 0, "rejected": 3}
    assert run.counts["patient"]["inserted"] == 180
    assert run.counts["reminder"]["inserted"] == 360
    assert run.counts["appointment"]["inserted"] == 60
    assert await count(hub, Client) == 120
    assert await count(hub, Patient) == 180
    assert await count(hub, Reminder) == 360
    assert await count(hub, Appointment) == 60
    async with hub.sessionmaker() as s:
        rejects = {r.reason.split(" ")[0] + " " + r.reason.split(" ")[1]: r for r in
                   (await s.execute(select(SyncReject))).scalars()}
        first = (await s.execute(select(Client).where(Client.external_id == "C0000001"))).scalar_one()
    assert set(rejects) == {"invalid email", "unparseable phone", "missing external"}
    assert rejects["invalid email"].raw["row"][0] == "CBAD0001"
    assert rejects["invalid email"].source.startswith("clients.csv:")
    # normalised: E.164 phones, trimmed address
    for phone in (first.phone_home, first.phone_work, first.phone_mobile):
        assert phone is None or (phone.startswith("+1") and len(phone) == 12)
    assert first.address_line1 == first.address_line1.strip()

    processed = sorted(p.name for p in (drop_dir / "processed").iterdir())
    assert len([p for p in processed if p.endswith("-clients.csv")]) == 1
    [report] = [p for p in processed if p.endswith("clients.csv.report.csv")]
    with open(drop_dir / "processed" / report, encoding="utf-8") as f:
        lines = list(csv.DictReader(f))
    assert sorted(r["reason"].split(":")[0] for r in lines) == [
        "invalid email 'not-an-email@'", "missing external id", "unparseable phone 'call me maybe'"]
    assert all(r["line"] for r in lines)
    assert not list(drop_dir.glob("*.csv"))

    # Incremental: 20 clients changed (2 inactivated), one pet deceased.
    changes = data.change(20)
    make_stable(*write_export(drop_dir, changes, suffix="-delta").values())
    [run2] = await sync_practices(hub, practice="oak")
    assert run2.status == "succeeded", run2.error
    assert run2.counts["client"] == {"inserted": 0, "updated": 20, "unchanged": 0, "rejected": 0}
    assert run2.counts["patient"] == {"inserted": 0, "updated": 1, "unchanged": 0, "rejected": 0}
    async with hub.sessionmaker() as s:
        statuses = dict((await s.execute(
            select(Client.status, func.count()).group_by(Client.status))).all())
        dead = (await s.execute(select(Patient).where(Patient.status == "deceased"))).scalars().all()
    inactive_before = sum(1 for r in data.clients[:120] if r[3] == "inactive")
    assert statuses["inactive"] >= inactive_before + 1
    assert [p.external_id for p in dead] == [changes.patients[0][0]]
    assert await count(hub, Client) == 120  # nothing deleted

    # The same delta again (a re-sent file) changes nothing.
    make_stable(*write_export(drop_dir, changes, suffix="-again").values())
    [run3] = await sync_practices(hub, practice="oak")
    assert run3.counts["client"] == {"inserted": 0, "updated": 0, "unchanged": 20, "rejected": 0}


async def test_wrong_encoding_and_truncated_file(hub_factory, pims_practice, drop_dir: Path) -> None:
    data = generate(30, seed=5)
    rows = [list(r) for r in data.clients]
    rows[4][1] = "Zoë"
    # Written as Latin-1 while the connector expects UTF-8: that row alone is undecodable.
    path = write_csv(drop_dir / "clients.csv", CLIENT_COLUMNS, rows[:10], encoding="latin-1")
    good = write_csv(drop_dir / "clients-2.csv", CLIENT_COLUMNS, rows[10:], bom=True)
    truncate(good, good.stat().st_size - 60)  # the last row is cut off mid-way
    make_stable(path, good)
    hub = await hub_factory({"practices": [pims_practice([{"connector": "file_export",
                                                           "drop_dir": str(drop_dir)}])]})
    [run] = await sync_practices(hub, practice="oak")
    assert run.status == "succeeded", run.error
    latin = sum(1 for r in rows[:10] if not "".join(r).isascii())
    assert latin >= 1
    assert run.counts["client"]["inserted"] == 30 - latin - 1
    async with hub.sessionmaker() as s:
        reasons = sorted(r.reason for r in (await s.execute(select(SyncReject))).scalars())
    assert len(reasons) == latin + 1
    assert sum("not valid utf-8" in r for r in reasons) == latin
    assert sum(f"expected {len(CLIENT_COLUMNS)} fields" in r for r in reasons) == 1


async def test_unreadable_file_goes_to_failed(hub_factory, pims_practice, drop_dir: Path) -> None:
    write_csv(drop_dir / "patients.csv", ["pet", "owner"], [["1", "2"]])
    make_stable(drop_dir / "patients.csv")
    (drop_dir / "clients.csv.part").write_text("client_id\nC1\n")  # still being written
    hub = await hub_factory({"practices": [pims_practice([{"connector": "file_export",
                                                           "drop_dir": str(drop_dir)}])]})
    [run] = await sync_practices(hub, practice="oak")
    assert run.status == "succeeded"
    assert run.counts["patient"]["rejected"] == 1
    failed = sorted(p.name for p in (drop_dir / "failed").iterdir())
    assert len(failed) == 2 and failed[1].endswith("patients.csv.report.csv")
    assert "no 'patient_id' column" in (drop_dir / "failed" / failed[1]).read_text()
    assert (drop_dir / "clients.csv.part").exists()


async def test_column_mapping_and_encoding(hub_factory, pims_practice, drop_dir: Path) -> None:
    data = generate(5, seed=9)
    header = ["ClientNo" if c == "client_id" else "E-mail" if c == "email" else c
              for c in CLIENT_COLUMNS]
    rows = [list(r) for r in data.clients]
    rows[0][2] = "Müller"
    make_stable(write_csv(drop_dir / "clients.csv", CLIENT_COLUMNS, rows, header=header,
                          encoding="cp1252"))
    entry = {"connector": "file_export", "drop_dir": str(drop_dir), "encoding": "cp1252",
             "columns": {"client": {"client_id": "ClientNo", "email": "E-mail"}}}
    hub = await hub_factory({"practices": [pims_practice([entry])]})
    [run] = await sync_practices(hub, practice="oak")
    assert run.counts["client"]["inserted"] == 5, run
    async with hub.sessionmaker() as s:
        c = (await s.execute(select(Client).where(Client.external_id == rows[0][0]))).scalar_one()
    assert c.last_name == "Müller"
    assert c.email == (rows[0][7] or None)
