"""Environment skips: VETHUB_REQUIRE_<NAME>=1 turns each into a failure, and CI sets them all."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[3]

PROBE = '''
from hub.testing.fixtures_env import needs, skip_or_fail

@needs("PROBE_TOOL", False, "the probe tool is missing")
def test_marked():
    raise AssertionError("must not run")

def test_called():
    skip_or_fail("PROBE_TOOL", "the probe tool is missing")

@needs("PROBE_TOOL", True, "never shown")
def test_available():
    pass
'''


def _outcomes(tmp_path: Path, env: dict[str, str]) -> dict[str, str]:
    (tmp_path / "test_probe.py").write_text(PROBE, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("VETHUB_REQUIRE_")} | env,
    )
    found = re.findall(r"::(test_\w+) (PASSED|FAILED|SKIPPED|ERROR)", proc.stdout)
    return dict(found) | {"rc": str(proc.returncode)}


def test_missing_tool_skips_unless_required(tmp_path: Path) -> None:
    skipped = _outcomes(tmp_path, {})
    assert skipped["rc"] == "0" and skipped["test_available"] == "PASSED"
    assert list(skipped.values()).count("SKIPPED") == 2

    failed = _outcomes(tmp_path, {"VETHUB_REQUIRE_PROBE_TOOL": "1"})
    assert failed["rc"] == "1" and failed["test_available"] == "PASSED"
    # The mark fails the test at set-up (an error), the call in its body as a failure.
    assert (failed["test_marked"], failed["test_called"]) == ("ERROR", "FAILED")


def test_ci_requires_every_switch_the_suite_uses() -> None:
    used = {"POSTGRES"}
    pattern = re.compile(r"""(?:needs|skip_or_fail)\(\s*["']([A-Z0-9_]+)["']""")
    for path in [*(ROOT / "tests").rglob("*.py"), *(ROOT / "hub" / "testing").rglob("*.py")]:
        if path != Path(__file__):
            used |= set(pattern.findall(path.read_text(encoding="utf-8")))
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    exported = set(re.findall(r"VETHUB_REQUIRE_([A-Z0-9_]+)=1", ci))
    assert used - {"PROBE_TOOL"} <= exported, f"not required in .ci/run: {sorted(used - exported)}"
