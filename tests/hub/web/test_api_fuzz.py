"""schemathesis against the live app: the quick-start config plus seeded data, both databases.

Every operation in the served spec is called with generated input, as an operator and as
practice staff: no answer may be a 500, and every answer must match the spec (status, content
type, body schema). Examples per operation are bounded so the suite stays inside CI's time.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from hub.config import load_config
from hub.core import Hub
from hub.db.models import Practice
from hub.plugins import get_plugin_manager
from hub.testing.fixtures_core import ApiClient, deep_merge
from hub.web.app import create_app

ROOT = Path(__file__).parents[3]
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
MAX_EXAMPLES = int(os.environ.get("VETHUB_FUZZ_EXAMPLES", "12"))
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"

pytestmark = pytest.mark.slow


def quick_start_config(db_url: str, tmp_path: Path) -> Any:
    data = tomllib.loads((ROOT / "config.example.toml").read_text(encoding="utf-8"))
    data = deep_merge(data, {
        "hub": {"data_dir": str(tmp_path / "var")},
        "database": {"url": db_url},
        "http": {"port": 0},
        "dicom": {"port": 0},
    })
    data["hub"]["secret_key"] = "fuzz-secret-key-that-is-long-enough-0123456789"
    for practice in data.get("practices", []):
        for pims in practice.get("pims", []):
            pims["drop_dir"] = str(tmp_path / "drop" / practice["slug"])
    return load_config(str(ROOT / "config.example.toml"), data=data, env={})


async def _fuzz(url: str, token: str, report: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(SCHEMATHESIS), "run", f"{url}/api/openapi.json", "-H", f"Authorization: Bearer {token}",
        "--checks", CHECKS, "--max-examples", str(MAX_EXAMPLES), "--seed", "20261207",
        "--request-timeout", "20", "--report", "ndjson", "--report-ndjson-path", str(report),
        "--exclude-path", "/api/logout",  # it revokes the very token the run uses
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""},
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=900)
    return proc.returncode or 0, out.decode(errors="replace")


async def test_no_500_and_every_answer_matches_the_spec(db_url: str, tmp_path: Path) -> None:
    if not SCHEMATHESIS.exists():
        pytest.fail("schemathesis is part of the test extra; reinstall with '.[test]'")
    config = quick_start_config(db_url, tmp_path)
    hub = Hub(config, get_plugin_manager(config.plugins.disabled))
    await hub.start(upgrade=True)
    client = TestClient(TestServer(create_app(hub, start_hub=False, run_workers=False),
                                   host="127.0.0.1", port=0))
    await client.start_server()
    try:
        api = ApiClient(client, hub)
        async with hub.sessionmaker() as session:
            practice_id = (await session.execute(select(Practice.id))).scalars().first()
        operator = await api.as_role("operator")
        staff = await api.as_role("practice_staff", practice_id=practice_id)
        url = str(client.make_url("")).rstrip("/")
        failures = []
        for name, caller in (("operator", operator), ("practice_staff", staff)):
            token = caller.headers["Authorization"].split()[1]
            code, out = await _fuzz(url, token, tmp_path / f"{name}.ndjson")
            if code != 0:
                # The failures themselves, not the warnings that follow them.
                found = out.split("FAILURES", 1)[-1].split("WARNINGS", 1)[0]
                failures.append(f"--- as {name} (exit {code}) ---\n{found[:12000]}")
        assert not failures, "\n".join(failures)
        # The run exercised the spec for real: it made requests.
        events = [json.loads(line) for line in (tmp_path / "operator.ndjson").read_text().splitlines()]
        scenarios = sum(1 for e in events if "ScenarioFinished" in e)
        operations = sum(len(ops) for ops in (await (await client.get("/api/openapi.json")).json())["paths"].values())
        assert scenarios >= operations, (scenarios, operations)
    finally:
        await client.close()
        await hub.stop()
