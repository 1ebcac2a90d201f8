"""The core imports no vendor SDK: only the plugin that needs one does."""

from __future__ import annotations

import ast
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
