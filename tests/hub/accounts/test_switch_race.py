"""Two processes decide the same switch request at the same moment: exactly one switch.

Each process is a real hub on the same database (SQLite file or PostgreSQL); they wait on a
barrier file and then call the same service. The row lock plus the compare-and-set on the
request's state let one carry the switch out; the other finds it decided and does nothing.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from sqlalchemy import func, select

from hub.accounts.models import AccountHistory, SwitchRequest, SwitchStep
from hub.db.models import Account, Job

from .accounts_world import World, add_practice

SCRIPT = Path(__file__).with_name("switch_decider.py")


async def _read_until(proc: asyncio.subprocess.Process, marker: str, timeout: float = 60) -> list[str]:
    lines: list[str] = []
    async with asyncio.timeout(timeout):
        while True:
            raw = await proc.stdout.readline()
            if not raw:
                return lines
            line = raw.decode().strip()
            lines.append(line)
            if line.startswith(marker):
                return lines


async def test_two_processes_switch_exactly_once(world: World, write_config, tmp_path) -> None:
    rr, sc = world.companies["read-right"], world.companies["scan-co"]
    pid, accounts = await add_practice(world.hub, "elm-vets", {rr: ["DX"]})
    async with world.hub.transaction() as s:
        sr = SwitchRequest(kind="move", practice_id=pid, account_id=accounts[rr], current_company_id=rr,
                           new_company_id=sc, modalities=[], requester_name="Ada", requester_authorised=True,
                           statement="in writing", source="practice", entered_by="test", state="pending",
                           requested_at=world.clock.now(), response="none", operator_decision="none")
        s.add(sr)
        await s.flush()
        switch_id = sr.id
    config = write_config({})
    barrier = tmp_path / "go"
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, str(SCRIPT), str(config), str(switch_id), str(barrier), str(i),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=str(Path.cwd()),
        )
        for i in range(2)
    ]
    try:
        for p in procs:
            assert (await _read_until(p, "READY"))[-1] == "READY"
        barrier.touch()
        outputs = [await _read_until(p, "DECIDED") for p in procs]
        codes = [await asyncio.wait_for(p.wait(), 60) for p in procs]
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
    errors = [(await p.stderr.read()).decode()[-2000:] for p in procs]
    assert codes == [0, 0], errors
    decided = [o[-1] for o in outputs]
    assert all(d.startswith("DECIDED switch_now") for d in decided), decided
    assert sum("already decided" not in d for d in decided) == 1, decided

    async with world.hub.sessionmaker() as s:
        steps = (await s.execute(select(SwitchStep.step).where(SwitchStep.switch_request_id == switch_id))).scalars().all()
        moved_in = (await s.execute(select(func.count()).select_from(AccountHistory)
                                    .where(AccountHistory.change == "switched_in"))).scalar()
        accounts_now = (await s.execute(select(Account.company_id, Account.status)
                                        .where(Account.practice_id == pid).order_by(Account.id))).all()
        emails = (await s.execute(select(func.count()).select_from(Job).where(Job.kind == "messaging.send"))).scalar()
        final = await s.get(SwitchRequest, switch_id)
    assert steps.count("switched") == 1
    assert moved_in == 1
    assert [tuple(a) for a in accounts_now] == [(rr, "switched"), (sc, "active")]
    assert final.state == "completed"
    assert emails == 1  # one completion email to the practice, both companies in Cc
