"""Every hookspec is called by the core and exercised by a test of its own.

Modelled on datasette's ``test_plugin_hooks_have_tests``: a hook nobody calls is a promise to
plugin authors that the hub does not keep, and a hook no test names can break unnoticed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hub import hookdocs

ROOT = Path(__file__).parents[2]
HOOKS = [name for name, _ in hookdocs.hook_functions()]

# Known gaps, each with the issue that closes it; strict, so the entry must go when it is closed.
NOT_YET_CALLED = {
}


def _sources(*folders: str) -> str:
    return "\n".join(
        path.read_text(encoding="utf-8")
        for folder in folders for path in (ROOT / folder).rglob("*.py")
        if "testing" not in path.parts
    )


CORE = _sources("hub", "plugins", "connectors")
TESTS = _sources("tests")


def _called(name: str) -> bool:
    # Three ways the core calls a hook: ``pm.hook.NAME(...)``, its implementations one by one
    # (``pm.hook.NAME.get_hookimpls()``), or by name through ``Hub.fire``/lifecycle helpers.
    patterns = (rf"\.hook\.{name}\b", rf"\(\s*\"{name}\"")
    return any(re.search(p, CORE) for p in patterns)


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_called_by_the_core(name: str) -> None:
    if name in NOT_YET_CALLED:
        pytest.xfail(f"not called yet: {NOT_YET_CALLED[name]}")
    assert _called(name), f"{name} is declared in hub/hookspecs.py but nothing calls it"


@pytest.mark.parametrize("name", HOOKS)
def test_hook_has_a_test(name: str) -> None:
    if name in NOT_YET_CALLED:
        pytest.xfail(f"not called yet: {NOT_YET_CALLED[name]}")
    assert name in TESTS, f"no test names {name}"


def test_known_gaps_are_still_gaps() -> None:
    closed = [name for name in NOT_YET_CALLED if _called(name)]
    assert closed == [], f"remove {closed} from NOT_YET_CALLED: the core calls them now"


def test_hook_api_version_is_declared() -> None:
    from hub.hookspecs import HOOK_API_VERSION

    assert isinstance(HOOK_API_VERSION, tuple) and len(HOOK_API_VERSION) == 2
