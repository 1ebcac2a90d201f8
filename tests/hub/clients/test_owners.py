"""Which clients of a page own an active patient: matched within the client's own practice,
never across practices that reuse a PIMS id, and only by active patients."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, insert, select

from hub.clients import search
from hub.core import Hub
from hub.db.models import Practice
from hub.pims.models import Client, Patient

CONFIG: dict[str, Any] = {"practices": [{"slug": "a", "name": "A"}, {"slug": "b", "name": "B"}]}


async def _two_practices_with_owners(hub: Hub) -> tuple[int, int]:
    """Practices A and B with clients c1–c3 each; only A's c1 and B's c2 own an active patient."""
    now = datetime.now(UTC)
    async with hub.transaction() as session:
        a, b = (await session.execute(select(Practice.id).order_by(Practice.id))).scalars().all()
        # the same PIMS ids at both practices; only A's c1 and B's c2 have an active patient
        await session.execute(insert(Client), [
            {"practice_id": pid, "external_id": ext, "first_name": "Ann", "last_name": "Smith",
             "synced_at": now, "name_key": "ann smith", "surname_key": "smith ann"}
            for pid in (a, b) for ext in ("c1", "c2", "c3")])
        await session.execute(insert(Patient), [
            {"practice_id": a, "external_id": "p1", "client_external_id": "c1", "name": "Rex",
             "synced_at": now, "name_key": "rex"},
            {"practice_id": b, "external_id": "p2", "client_external_id": "c2", "name": "Tib",
             "synced_at": now, "name_key": "tib"},
            {"practice_id": a, "external_id": "p3", "client_external_id": "c3", "name": "Old",
             "synced_at": now, "name_key": "old", "status": "inactive"}])
    return a, b


async def test_owners_are_matched_within_each_practice(hub_factory: Any) -> None:
    hub: Hub = await hub_factory(CONFIG)
    a, b = await _two_practices_with_owners(hub)
    clients = await hub.read(lambda conn: conn.execute(select(Client.id, Client.practice_id, Client.external_id)).all())
    owners = await hub.read(lambda conn: search.active_patient_owners_on(conn, list(clients)))
    assert owners == {(a, "c1"), (b, "c2")}
    only_b = [c for c in clients if c.practice_id == b]
    assert await hub.read(lambda conn: search.active_patient_owners_on(conn, only_b)) == {(b, "c2")}
    assert await hub.read(lambda conn: search.active_patient_owners_on(conn, [])) == set()


async def test_a_search_page_carries_its_owners_and_is_one_statement(hub_factory: Any) -> None:
    """The API's search rows say whether each client owns an active patient, matched the same
    way, and a name search's page — every phase and the owners — is read in one statement
    (each one a round trip to PostgreSQL)."""
    hub: Hub = await hub_factory(CONFIG)
    a, b = await _two_practices_with_owners(hub)

    def page(conn: Any, q: str, **kw: Any) -> tuple[search.Page, list[str]]:
        statements: list[str] = []

        def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            statements.append(statement)

        event.listen(conn, "before_cursor_execute", count)
        try:
            return search.find_client_rows(conn, [a, b], q, **kw), statements
        finally:
            event.remove(conn, "before_cursor_execute", count)

    # by surname, by first name, everyone, by PIMS id (both practices' c1, only A's owns)
    for q, size, owners in (("smith", 6, {(a, "c1"), (b, "c2")}), ("ann", 6, {(a, "c1"), (b, "c2")}),
                            ("", 6, {(a, "c1"), (b, "c2")}), ("c1", 2, {(a, "c1")})):
        found, statements = await hub.read(lambda conn, q=q: page(conn, q))
        assert len(found.items) == size and search.owners_in(found.items) == owners, q
        assert len(statements) == 1, (q, statements)
    # a page that ends inside the surname phase resumes there, still one statement
    first, _ = await hub.read(lambda conn: page(conn, "smith", limit=4))
    rest, statements = await hub.read(lambda conn: page(conn, "smith", limit=4, cursor=first.next_cursor))
    assert len(statements) == 1 and rest.next_cursor is None
    assert sorted(c.id for c in first.items + rest.items) == sorted(
        c.id for c in (await hub.read(lambda conn: page(conn, "smith")))[0].items)
