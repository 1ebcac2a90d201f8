"""docs/alerts.yml is a valid Prometheus rules file (promtool, where installed) over metrics the
hub exports, and docs/operator-guide.md lists every metric and every operator event kind."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

import hub.core  # noqa: F401 - registers the core's metrics
import hub.ops.metrics  # noqa: F401
import hub.web.health  # noqa: F401

ROOT = Path(__file__).resolve().parents[3]
RULES = ROOT / "docs" / "alerts.yml"
GUIDE = (ROOT / "docs" / "operator-guide.md").read_text(encoding="utf-8")


def hub_metrics() -> set[str]:
    return {family.name + ("_total" if family.type == "counter" else "")
            for family in REGISTRY.collect() if family.name.startswith("vethub_")}


def test_promtool_accepts_the_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: prometheus); the parse test below still runs")
    proc = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_rules_are_complete_and_use_exported_metrics() -> None:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    rules = [r for group in doc["groups"] for r in group["rules"]]
    assert len({r["alert"] for r in rules}) == len(rules)
    exported = hub_metrics()
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        used = set(re.findall(r"\bvethub_[a-z_]+", rule["expr"]))
        assert used <= exported, (rule["alert"], used - exported)


def test_the_guide_lists_every_metric() -> None:
    missing = sorted(m for m in hub_metrics() if f"`{m}" not in GUIDE)
    assert not missing, f"docs/operator-guide.md does not list {missing}"


def test_the_guide_lists_every_event_kind() -> None:
    kinds = set()
    pattern = re.compile(r'(?:events\.record\(\s*\w+,\s*|EVENT\s*=\s*)"([a-z_]+\.[a-z_.]+)"')
    for folder in ("hub", "plugins", "connectors"):
        for path in (ROOT / folder).rglob("*.py"):
            kinds |= set(pattern.findall(path.read_text(encoding="utf-8")))
    assert {"jobs.dead", "dicom.instance_refused", "pims.sync_failed"} <= kinds
    missing = sorted(k for k in kinds if f"`{k}`" not in GUIDE)
    assert not missing, f"docs/operator-guide.md does not list the event kinds {missing}"
