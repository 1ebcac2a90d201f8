"""Run in a separate process by test_switch_race.py: wait for the barrier file, then decide one
switch request, and print the outcome this process carried out ("moved" or "noop")."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from hub.accounts.switching import evaluate
from hub.config import load_config
from hub.core import create_hub


async def main(config_path: str, switch_id: int, barrier: Path) -> None:
    hub = create_hub(load_config(config_path))
    await hub.start(lifecycle=False, upgrade=False)
    try:
        print("READY", flush=True)
        deadline = time.monotonic() + 30
        while not barrier.exists():
            if time.monotonic() > deadline:
                raise SystemExit("barrier never opened")
            await asyncio.sleep(0.001)
        async with hub.transaction() as session:
            decision = await evaluate(session, hub, switch_id, actor=f"process:{sys.argv[4]}")
            print("DECIDED", decision.outcome.value, decision.reason, flush=True)
    finally:
        await hub.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])))
