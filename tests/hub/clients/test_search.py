"""Finding clients and patients in a practice synced from the file-export generator."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from sqlalchemy import text

from hub.clients import search
from hub.pims.normalise import search_key
from hub.testing.exports import CLIENT_COLUMNS, PATIENT_COLUMNS

from .conftest import World

COL = {name: i for i, name in enumerate(CLIENT_COLUMNS)}


def digits(phone: str) -> str:
    return re.sub(r"\D", "", phone)


async def all_pages(api, path: str) -> list[dict]:
    items, cursor = [], None
    while True:
        url = path + (f"&cursor={cursor}" if cursor else "")
        resp = await api.get(url)
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items


async def test_name_prefix_is_case_and_accent_insensitive(world: World, api_of) -> None:
    staff = await api_of("practice_staff", practice_id=world.practice_id)
    for first, query in (("Zoë", "ZOE"), ("José", "jose"), ("Siobhán", "siobh")):
        expected = {r[COL["client_id"]] for r in world.data.clients
                    if search_key(r[COL["first_name"]]).startswith(search_key(query))}
        assert expected, f"the generator made no {first}"
        got = await all_pages(staff, f"/api/clients?q={query}&limit=7")
        assert {c["pims_id"] for c in got} == expected
    # a surname prefix, and "last first"
    muller = {r[COL["client_id"]] for r in world.data.clients if r[COL["last_name"]] == "Müller"}
    got = await all_pages(staff, "/api/clients?q=mull&limit=5")
    assert {c["pims_id"] for c in got} == muller
    names = [search_key(f"{c['last_name']} {c['first_name']}") for c in got]
    assert names == sorted(names)


async def test_a_name_pages_through_surnames_then_first_names(world: World, api_of) -> None:
    """A prefix matching surnames and first names: every match once, surnames first (A-Z),
    then first names (A-Z), across pages that end inside either phase."""
    staff = await api_of("practice_staff", practice_id=world.practice_id)
    rows = world.data.clients

    def key(r: list[str], *cols: str) -> str:
        return search_key(" ".join(r[COL[c]] for c in cols))

    for letter in "abcdefghijklmnopqrstuvwxyz":
        by_surname = [r for r in rows if key(r, "last_name", "first_name").startswith(letter)]
        by_first = [r for r in rows if key(r, "first_name", "last_name").startswith(letter)
                    and r not in by_surname]
        if by_surname and by_first:
            break
    else:
        raise AssertionError("the generator made no name prefix shared by surnames and first names")
    got = await all_pages(staff, f"/api/clients?q={letter}&limit=3")
    ids = [c["pims_id"] for c in got]
    assert len(ids) == len(set(ids))
    split = len(by_surname)
    assert set(ids[:split]) == {r[COL["client_id"]] for r in by_surname}
    assert set(ids[split:]) == {r[COL["client_id"]] for r in by_first}
    surnames = [search_key(f"{c['last_name']} {c['first_name']}") for c in got[:split]]
    firsts = [search_key(f"{c['first_name']} {c['last_name']}") for c in got[split:]]
    assert surnames == sorted(surnames) and firsts == sorted(firsts)


async def test_email_phone_and_pims_id(world: World, api_of) -> None:
    staff = await api_of("practice_staff", practice_id=world.practice_id)
    row = next(r for r in world.data.clients if r[COL["email"]] and r[COL["phone_mobile"]])
    by_email = await (await staff.get(f"/api/clients?q={row[COL['email']].upper()}")).json()
    assert [c["pims_id"] for c in by_email["items"]] == [row[COL["client_id"]]]
    # the phone as the PIMS wrote it, and as bare digits: both matched on E.164
    for form in (row[COL["phone_mobile"]], digits(row[COL["phone_mobile"]])[-10:]):
        resp = await staff.get("/api/clients", params={"q": form})
        ids = [c["pims_id"] for c in (await resp.json())["items"]]
        assert row[COL["client_id"]] in ids
    by_id = await (await staff.get(f"/api/clients?q={row[COL['client_id']]}")).json()
    [item] = by_id["items"]
    assert item["pims_id"] == row[COL["client_id"]]
    assert item["phone_mobile"].startswith("+1")


async def test_filters_pages_and_contactable(world: World, api_of) -> None:
    staff = await api_of("practice_staff", practice_id=world.practice_id)
    everyone = await all_pages(staff, "/api/clients?limit=37")
    assert len(everyone) == len({c["id"] for c in everyone}) == len(world.data.clients)
    active_owners = {p[PATIENT_COLUMNS.index("client_id")] for p in world.data.patients
                     if p[PATIENT_COLUMNS.index("status")] == "active"}
    rows = {r[COL["client_id"]]: r for r in world.data.clients}
    for c in everyone:
        r = rows[c["pims_id"]]
        assert c["contactable"] == (r[COL["status"]] == "active"
                                    and r[COL["comms_disabled"]] == "no"
                                    and c["pims_id"] in active_owners)
    assert {c["contactable"] for c in everyone} == {True, False}
    inactive = await all_pages(staff, "/api/clients?status=inactive&limit=50")
    assert inactive and {rows[c["pims_id"]][COL["status"]] for c in inactive} == {"inactive"}
    no_email = await all_pages(staff, "/api/clients?has_email=false&limit=50")
    assert len(no_email) == sum(1 for r in world.data.clients if not r[COL["email"]])
    bad = await staff.get("/api/clients?cursor=bm90IGEgY3Vyc29y")
    assert bad.status == 422 and (await bad.json())["error"]["field"] == "cursor"
    assert (await staff.get("/api/clients?limit=0")).status == 422


async def test_patients(world: World, api_of) -> None:
    staff = await api_of("practice_staff", practice_id=world.practice_id)
    owner = world.data.patients[0][1]
    [client] = (await (await staff.get(f"/api/clients?q={owner}")).json())["items"]
    body = await (await staff.get(f"/api/clients/{client['id']}/patients")).json()
    expected = {p[0] for p in world.data.patients if p[1] == owner}
    assert {p["pims_id"] for p in body["items"]} == expected
    assert {p["status"] for p in body["items"]} <= {"active", "inactive", "deceased"}
    name = world.data.patients[0][2]
    found = await all_pages(staff, f"/api/patients?q={name.lower()[:3]}&limit=40")
    assert {p["pims_id"] for p in found} == {
        p[0] for p in world.data.patients if search_key(p[2]).startswith(search_key(name[:3]))}


async def test_scoping(world: World, api_of) -> None:
    other = await api_of("practice_staff", practice_id=world.other_id)
    admin = await api_of("company_admin", company_id=world.company_id)
    operator = await api_of("operator")
    assert (await (await other.get("/api/clients")).json())["items"] == []
    assert (await other.get(f"/api/clients?practice_id={world.practice_id}")).status == 404
    assert (await (await other.get("/api/patients")).json())["items"] == []
    every = await (await operator.get(f"/api/clients?practice_id={world.practice_id}&limit=1")).json()
    cid = every["items"][0]["id"]
    for path in ("/api/clients", f"/api/clients/{cid}", f"/api/clients/{cid}/patients",
                 "/api/patients"):
        assert (await admin.get(path)).status == 404, path
    for path in (f"/api/clients/{cid}", f"/api/clients/{cid}/patients"):
        assert (await other.get(path)).status == 404, path
        assert (await operator.get(path)).status == 200, path
    assert (await operator.get("/api/clients/99999999")).status == 404


def _plan(rows: list) -> str:
    return " | ".join(" ".join(str(c) for c in r) for r in rows)


async def test_search_uses_the_indexes(world_factory) -> None:
    """EXPLAIN of each form of the query: an index, never a scan of the clients table."""
    world = await world_factory(3000, seed=9)
    hub = world.hub
    async with hub.sessionmaker() as session:
        pg = session.bind.dialect.name == "postgresql"
        if pg:
            await session.execute(text("ANALYZE clients"))
        # each form must be answered from its own term's index, not by walking the practice's
        # rows in some index's order (which also reads "USING INDEX")
        # an email or a phone: one query, its term's index; a name: each phase of the search
        # (the exact PIMS id, surnames, first names) its own ordered range of its own index
        cases = [("email", search.client_query([world.practice_id], "olivia.smith1@example.com",
                                               "US", limit=50), "ix_clients_practice_email_key"),
                 ("phone", search.client_query([world.practice_id], "(217) 555-0143", "US",
                                               limit=50), "ix_clients_practice_phone_mobile")]
        for phase, index in (("pims_id", "external_id"), ("surname", "ix_clients_practice_surname_key"),
                             ("name", "ix_clients_practice_name_key")):
            for q in ("smi", "C0000042"):
                cases.append((f"{phase} {q}", search.name_phase_query(
                    [world.practice_id], q, phase, 51), index))
        for what, stmt, index in cases:
            compiled = stmt.compile(session.bind, compile_kwargs={"literal_binds": True})
            explain = "EXPLAIN " if pg else "EXPLAIN QUERY PLAN "
            plan = _plan((await session.execute(text(explain + str(compiled)))).all())
            if index == "external_id":  # the (practice_id, external_id) unique constraint's
                assert ("(external_id)::text =" in plan.split("Index Cond:")[-1] if pg
                        else "sqlite_autoindex_clients" in plan), (what, plan)
            else:
                assert index in plan, (what, plan)
            if pg:
                assert "Seq Scan on clients" not in plan, (what, plan)
                assert re.search(r"Index|Bitmap", plan), (what, plan)
            else:
                assert "SCAN clients" not in plan.replace("SCAN clients USING", ""), (what, plan)
                assert "(practice_id=?)" not in plan, (what, plan)
                assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, (what, plan)
                if what.startswith(("surname", "name")):  # read in index order: no sort of matches
                    assert "TEMP B-TREE" not in plan, (what, plan)
        # the API's page of a name search, every phase and the owners in one statement: each
        # phase still its own index range, each owner one probe of the patients' index
        stmt = search.name_search_query([world.practice_id], "smi", 50)
        compiled = stmt.compile(session.bind, compile_kwargs={"literal_binds": True})
        plan = _plan((await session.execute(text(("EXPLAIN " if pg else "EXPLAIN QUERY PLAN ")
                                                 + str(compiled)))).all())
        for index in ("ix_clients_practice_surname_key", "ix_clients_practice_name_key",
                      "ix_patients_practice_client"):
            assert index in plan, (index, plan)
        assert ("Seq Scan" not in plan) if pg else not re.search(r"SCAN (clients|patients)(?! USING)", plan), plan


def test_cli_find(write_config, pims_practice, drop_dir: Path) -> None:
    from hub.testing.exports import generate, make_stable, write_export

    data = generate(30, seed=3)
    make_stable(*write_export(drop_dir, data).values())
    config = write_config({"practices": [pims_practice([{"connector": "file_export",
                                                        "drop_dir": str(drop_dir)}])]})
    cli = [sys.executable, "-m", "hub.cli"]
    for args in (["db", "upgrade"], ["sync", "--practice", "oak", "--full"]):
        done = subprocess.run([*cli, *args, "--config", str(config)], capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stderr
    row = data.clients[4]
    found = subprocess.run([*cli, "clients", "find", row[COL["client_id"]], "--practice", "oak",
                            "--config", str(config)], capture_output=True, text=True)
    assert found.returncode == 0, found.stderr
    [line] = found.stdout.splitlines()
    assert line.split("\t")[1:3] == ["oak", row[COL["client_id"]]]
    missing = subprocess.run([*cli, "clients", "find", "zzzz", "--practice", "nope",
                              "--config", str(config)], capture_output=True, text=True)
    assert missing.returncode != 0 and "no practice" in missing.stderr
