"""Every hook is documented, and docs/hooks.md is what its docstrings say today."""

from __future__ import annotations

from pathlib import Path

from hub import hookdocs

DOCS = Path(__file__).parents[2] / "docs"


def test_every_hook_has_a_docstring() -> None:
    undocumented = [name for name, fn in hookdocs.hook_functions() if len((fn.__doc__ or "").strip()) < 40]
    assert undocumented == []


def test_hook_reference_is_up_to_date() -> None:
    assert (DOCS / "hooks.md").read_text(encoding="utf-8") == hookdocs.render(), (
        "docs/hooks.md is stale: python -m hub.hookdocs > docs/hooks.md"
    )


def test_docs_link_targets_exist() -> None:
    readme = (DOCS.parent / "README.md").read_text(encoding="utf-8")
    import re

    for target in re.findall(r"\]\((docs/[^)#]+)\)", readme):
        assert (DOCS.parent / target).exists(), f"README links to missing {target}"
