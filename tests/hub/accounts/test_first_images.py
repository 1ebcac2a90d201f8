""""First images received", stamped from ``vethub_instance_stored`` a committed batch at a time."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import event, select
from sqlalchemy.engine import Engine

from hub.accounts.models import AccountRequest
from hub.accounts.onboarding import FIRST_IMAGES_DONE

from .accounts_world import World, add_practice


async def _request(world: World, practice_id: int, *, stamped: bool = False) -> int:
    at = world.clock.now() - timedelta(days=1)
    async with world.hub.transaction() as s:
        req = AccountRequest(company_id=world.companies["read-right"], practice_id=practice_id,
                             email="desk@example.com", state="accepted", account_created_at=at,
                             first_images_received_at=at if stamped else None)
        s.add(req)
        await s.flush()
        return req.id


async def test_a_batch_of_new_practices_is_looked_up_in_one_read(world: World) -> None:
    """Two hundred practices sending their first studies at once used to cost a read each on
    the event loop; a committed batch's practices now share one read (and one write for the
    ones with a request waiting), and every accepted request is stamped as before."""
    hub, company = world.hub, world.companies["read-right"]
    practices = [(await add_practice(hub, f"p{n}", {company: ["CT"]}))[0] for n in range(6)]
    waiting = [await _request(world, p) for p in practices[:2]]
    already = await _request(world, practices[2], stamped=True)
    reads: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "account_requests" in statement:
            reads.append(statement)

    event.listen(Engine, "before_cursor_execute", count)
    try:
        batch = [{"hub": hub, "instance": {"practice_id": p, "instance_id": n, "created": True,
                                           "modality": "CT"}}
                 for n, p in enumerate(practices + practices[:3])]
        await hub.fire_each("vethub_instance_stored", batch)
        assert len(reads) == 1
        await hub.fire_each("vethub_instance_stored", batch)  # all known now: no read at all
        assert len(reads) == 1
    finally:
        event.remove(Engine, "before_cursor_execute", count)

    async with hub.sessionmaker() as s:
        stamps = dict((await s.execute(
            select(AccountRequest.id, AccountRequest.first_images_received_at))).all())
    assert all(stamps[r] == world.clock.now() for r in waiting)
    assert stamps[already] == world.clock.now() - timedelta(days=1)
    assert set(practices) <= hub.state.get(FIRST_IMAGES_DONE, set())
