"""The core imports no vendor SDK: only the plugin that needs one does."""

from __future__ import annotations

import ast
import re
from pathlib import Path

HUB = Path(__file__).parents[2] / "hub"
VENDOR_SDKS = {"twilio", "lob", "lob_python", "ezyvet", "sendgrid", "boto3"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_hub_imports_no_vendor_sdk() -> None:
    offenders = {
        str(path.relative_to(HUB.parent)): sorted(imported_roots(path) & VENDOR_SDKS)
        for path in HUB.rglob("*.py")
        if imported_roots(path) & VENDOR_SDKS
    }
    assert offenders == {}


ROOTS = [HUB, HUB.parent / "plugins", HUB.parent / "connectors"]
WEAK = {"WeakKeyDictionary", "WeakValueDictionary", "WeakSet"}
KEYED_BY_HUB = re.compile(r"\b(dict|Dict|Mapping|MutableMapping|defaultdict)\[['\"]?Hub['\"]?,")
#: module-level weak registries that are not per-hub state, and why
NOT_PER_HUB = {
    # tokens belong to an HTTP session (a client is used without a hub in its own tests) and
    # ezyVet revokes a partner's old token on each grant, so clients sharing one session share one
    "connectors/ezyvet/client.py:_TOKENS",
}


def _module_registries(path: Path) -> list[str]:
    """Names bound at module level to a weak mapping or to a mapping keyed by ``Hub``."""
    found = []
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names, texts = [node.target.id], [ast.unparse(node.annotation)]
        elif isinstance(node, ast.Assign):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            texts = []
        else:
            continue
        if node.value is not None:
            texts.append(ast.unparse(node.value))
        if any(w in text or KEYED_BY_HUB.search(text) for text in texts for w in WEAK):
            found += names
    return found


def test_no_module_level_per_hub_registry() -> None:
    """Per-hub state lives on the hub (``hub.state[KEY]``, hub/state.py), not in module globals
    keyed by hub: such a global outlives tests' hubs, hides state from the hub's lifecycle and
    ties every hub in the process to one module."""
    offenders = [
        f"{path.relative_to(HUB.parent)}:{name}"
        for root in ROOTS
        for path in sorted(root.rglob("*.py"))
        for name in _module_registries(path)
    ]
    unexpected = sorted(set(offenders) - NOT_PER_HUB)
    assert unexpected == [], (
        f"module-level per-hub registries {unexpected}: keep per-hub state under a HubKey "
        "(hub.state.setdefault(KEY, factory)) instead")
    # the allowance must name something that still exists, or it silently allows a new one
    assert NOT_PER_HUB <= set(offenders), f"stale allowances: {sorted(NOT_PER_HUB - set(offenders))}"
