"""After a practice switches away, the old company sees only what was routed to it: a sweep of
every GET route in the app's route table (a new route is covered without editing this test)."""

from __future__ import annotations

import re
from datetime import timedelta

from hub import events
from hub.db.models import CallingAE
from hub.imaging.models import Case, Study
from hub.pims.models import Client

from .accounts_world import T0, World, add_case, add_practice

MARK = "Zzqmarker"


async def switched_world(world: World) -> dict[str, int]:
    rr, sc = world.companies["read-right"], world.companies["scan-co"]
    pid, accounts = await add_practice(world.hub, "elm-vets", {rr: ["DX"]})
    async with world.hub.transaction() as s:
        s.add(CallingAE(practice_id=pid, account_id=accounts[rr], ae_title="ELM1"))
    routed_case = await add_case(world.hub, pid, accounts[rr], rr, T0 - timedelta(days=400))
    staff = await world.api.as_role("practice_staff", practice_id=pid)
    r = await staff.post("/api/switch-requests", json={
        "current_company": "read-right", "new_company": "scan-co", "requester_name": "Ada",
        "requester_authorised": True, "statement": "Move us to ScanCo."})
    sr = await r.json()
    assert sr["state"] == "completed", sr
    async with world.hub.transaction() as s:
        routed_study = (await s.get(Case, routed_case)).study_id
        study = Study(practice_id=pid, study_instance_uid=f"1.2.826.{MARK}", modalities=["DX"],
                      instance_count=1, size_bytes=1, status="stable", animal_name=MARK,
                      first_received_at=T0, last_received_at=T0)
        client = Client(practice_id=pid, external_id="c1", first_name=MARK, last_name=MARK,
                        email="owner@example.org")
        s.add_all([study, client])
        await s.flush()
        new_case = Case(practice_id=pid, study_id=study.id, account_id=sr["new_account_id"], company_id=sc,
                        status="delivered", submitted_by="test", created_at=T0, updated_at=T0)
        s.add(new_case)
        await events.record(s, "pims.sync_failed", f"{MARK} failed", practice_id=pid)
        await s.flush()
        return {"practice": pid, "study": study.id, "case": new_case.id, "client": client.id,
                "account": sr["new_account_id"], "old_account": accounts[rr], "routed_case": routed_case,
                "routed_study": routed_study}


# the object each path parameter points at, by the path segment before it
TARGETS = {"practices": "practice", "studies": "study", "cases": "case", "clients": "client",
           "accounts": "account"}


def fill(path: str, ids: dict[str, int]) -> tuple[str, bool]:
    """The route's path with its parameters pointing at the practice's post-switch objects;
    True when it names one (then the old company must get 404/403)."""
    names_target = False

    def sub(match: re.Match) -> str:
        nonlocal names_target
        segment = path[:match.start()].rstrip("/").rsplit("/", 1)[-1]
        kind = TARGETS.get(segment)
        names_target = names_target or kind is not None
        return str(ids[kind]) if kind else "1"

    return re.sub(r"\{[^}]+\}", sub, path), names_target


async def test_old_company_sees_only_its_routed_cases(world: World) -> None:
    ids = await switched_world(world)
    old = await world.as_company("read-right")
    app = world.api.client.server.app
    swept = 0
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("formatter") or info.get("path")
        if route.method != "GET" or not path or not path.startswith("/api"):
            continue
        url, names_target = fill(path, ids)
        r = await old.get(url)
        text = await r.text()
        swept += 1
        assert r.status < 500, (url, r.status, text)
        assert MARK not in text, (url, text[:300])
        if names_target:  # refused (a route may validate its query before it scopes)
            assert r.status in (400, 403, 404, 422), (url, r.status)
    assert swept >= 15
    # what was routed to it stays readable
    assert (await old.get(f"/api/cases/{ids['routed_case']}")).status == 200
    assert (await old.get(f"/api/studies/{ids['routed_study']}")).status == 200
    studies = (await (await old.get("/api/studies")).json())["items"]
    assert [s["id"] for s in studies] == [ids["routed_study"]]
    # and it can neither write in the practice's name nor reinstate its old account
    r = await old.post("/api/communications", json={"client_id": ids["client"], "template": "message",
                                                     "category": "reminder", "context": {}})
    assert r.status == 404
    r = await old.post("/api/communications", json={"to": "x@example.org", "practice_id": ids["practice"],
                                                     "template": "message", "category": "reminder"})
    assert r.status in (403, 404)
    r = await old.patch(f"/api/accounts/{ids['old_account']}", json={"approved_for_access": True})
    assert r.status == 409
    # the new company does see the practice
    new = await world.as_company("scan-co")
    assert (await new.get(f"/api/studies/{ids['study']}")).status == 200
