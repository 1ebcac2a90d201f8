"""The sync engine as the hub runs it: schedules and jobs, the client-synced event, the status
API scoped to the caller, and `vethub sync`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest_asyncio
from sqlalchemy import select

from hub.db.models import Schedule
from hub.hookspecs import hookimpl
from hub.pims.models import SyncRun
from hub.testing.exports import bad_rows, generate, make_stable, write_export


class Listener:
    def __init__(self) -> None:
        self.synced: list[str] = []

    @hookimpl
    def vethub_client_synced(self, hub, client) -> None:
        self.synced.append(client.external_id)


def practices(drop: Path, pims_practice) -> list[dict]:
    return [pims_practice([{"connector": "file_export", "drop_dir": str(drop),
                            "sync_every_seconds": 600}]),
            pims_practice([], slug="elm")]


@pytest_asyncio.fixture
async def listener() -> Listener:
    return Listener()


@pytest_asyncio.fixture
async def hub(hub_factory, pims_practice, drop_dir: Path, listener: Listener):
    data = generate(8, seed=2)
    data.clients.append(bad_rows()["bad email"])
    make_stable(*write_export(drop_dir, data).values())
    # Staff tokens need an account approved for access.
    return await hub_factory({"practices": practices(drop_dir, pims_practice),
                              "companies": [{"slug": "rads", "name": "Rads"}],
                              "accounts": [{"practice": "oak", "company": "rads"},
                                           {"practice": "elm", "company": "rads"}]},
                             plugins=[("listener", listener)])


async def test_schedule_runs_sync_and_fires_client_synced(hub, listener: Listener) -> None:
    async with hub.sessionmaker() as s:
        schedule = await s.get(Schedule, "pims-sync:oak:file_export")
    assert schedule is not None and schedule.every_seconds == 600 and schedule.kind == "pims.sync"
    await hub.jobs.run_until_idle()
    async with hub.sessionmaker() as s:
        [run] = (await s.execute(select(SyncRun))).scalars().all()
    assert (run.status, run.trigger, run.rejected) == ("succeeded", "schedule", 1)
    assert run.counts["client"]["inserted"] == 8
    assert sorted(listener.synced) == [f"C{i:07d}" for i in range(1, 9)]


async def test_schedules_of_removed_connectors_are_disabled(hub, hub_factory, pims_practice,
                                                            drop_dir: Path) -> None:
    async with hub.transaction() as s:
        await hub.jobs.ensure_schedule(s, "pims-sync:oak:gone", "pims.sync",
                                       {"practice": "oak", "connector": "gone"}, 60)
    await hub.stop()
    again = await hub_factory({"practices": practices(drop_dir, pims_practice)})
    async with again.sessionmaker() as s:
        assert (await s.get(Schedule, "pims-sync:oak:gone")).enabled is False
        assert (await s.get(Schedule, "pims-sync:oak:file_export")).enabled is True


async def test_status_api_is_scoped(hub, api) -> None:
    await hub.jobs.run_until_idle()
    operator = await api.as_role("operator")
    resp = await operator.get("/api/practices/1/sync")
    assert resp.status == 200
    body = await resp.json()
    [item] = body["items"]
    run = item["last_run"]
    assert item["connector"] == "file_export" and run["status"] == "succeeded"
    assert run["counts"]["client"]["inserted"] == 8 and run["duration_seconds"] >= 0
    assert item["rejects_total"] == 1
    assert item["rejects"][0]["reason"].startswith("invalid email")
    assert item["rejects"][0]["raw"]["row"][0] == "CBAD0001"

    own = await api.as_role("practice_staff", practice_id=1)
    assert (await own.get("/api/practices/1/sync")).status == 200
    other = await api.as_role("practice_staff", practice_id=2)
    resp = await other.get("/api/practices/1/sync")
    assert resp.status == 404
    assert (await api.get("/api/practices/1/sync")).status == 401


def test_cli_sync(write_config, pims_practice, drop_dir: Path) -> None:
    make_stable(*write_export(drop_dir, generate(5, seed=4)).values())
    config = write_config({"practices": practices(drop_dir, pims_practice)})
    cli = [sys.executable, "-m", "hub.cli"]
    up = subprocess.run([*cli, "db", "upgrade", "--config", str(config)], capture_output=True, text=True)
    assert up.returncode == 0, up.stderr
    done = subprocess.run([*cli, "sync", "--config", str(config), "--practice", "oak", "--full"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "oak/file_export: succeeded" in done.stdout and "clients +5" in done.stdout
    missing = subprocess.run([*cli, "sync", "--config", str(config), "--practice", "nope"],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "no PIMS connector is configured" in missing.stderr


async def test_readiness_and_overlapping_ticks(hub, api) -> None:
    op = await api.as_role("operator")  # anyone else sees no practice names or details
    resp = await op.get("/readyz")
    assert (await resp.json())["checks"]["pims:oak/file_export"] == {"ok": True, "detail": "not synced yet"}
    await hub.jobs.run_until_idle()
    checks = (await (await op.get("/readyz")).json())["checks"]
    assert checks["pims:oak/file_export"]["ok"] and "succeeded" in checks["pims:oak/file_export"]["detail"]

    # A run still beating (a long sync in another replica): the next tick leaves it alone.
    now = hub.clock.now()
    async with hub.transaction() as s:
        s.add(SyncRun(practice_id=1, connector="file_export", trigger="cli", status="running",
                      started_at=now, heartbeat_at=now, counts={}))
    from hub.pims.sync import SyncEngine, connector_entries

    [entry] = connector_entries(hub.config.practices, "oak")
    skipped = await SyncEngine(hub, entry).run(trigger="schedule")
    assert skipped.status == "skipped"
    forced = await SyncEngine(hub, entry).run(trigger="cli")
    assert forced.status == "succeeded"
    async with hub.sessionmaker() as s:
        statuses = [r.status for r in (await s.execute(select(SyncRun).order_by(SyncRun.id))).scalars()]
    assert statuses == ["succeeded", "interrupted", "succeeded"]


def test_cli_progress_bar_on_a_terminal(write_config, pims_practice, drop_dir: Path) -> None:
    import os
    import pty

    make_stable(*write_export(drop_dir, generate(300, seed=6)).values())
    config = write_config({"practices": practices(drop_dir, pims_practice)})
    cli = [sys.executable, "-m", "hub.cli"]
    assert subprocess.run([*cli, "db", "upgrade", "--config", str(config)], capture_output=True).returncode == 0
    controller, terminal = pty.openpty()
    proc = subprocess.Popen([*cli, "sync", "--config", str(config)], stdout=terminal,
                            stderr=terminal, stdin=subprocess.DEVNULL)
    os.close(terminal)
    out = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closed: the process is done
            break
        if not chunk:
            break
        out += chunk
    os.close(controller)
    assert proc.wait(timeout=120) == 0, out
    text = out.decode("utf-8", "replace")
    assert "oak/file_export" in text and "100%" in text and "records" in text
    assert "oak/file_export: succeeded" in text
