"""Render the hook reference (docs/hooks.md) from the hookspecs' own docstrings.

    python -m hub.hookdocs > docs/hooks.md

tests/hub/test_docs.py fails when docs/hooks.md is out of date or a hook has no docstring.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, cast

from hub import hookspecs


def hook_functions() -> list[tuple[str, object]]:
    return [
        (name, fn) for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if name.startswith("vethub_") and fn.__module__ == hookspecs.__name__
    ]


def render() -> str:
    source = inspect.getsource(hookspecs)
    order = sorted(hook_functions(), key=lambda item: source.index(f"def {item[0]}("))
    lines = [
        "# Hook reference",
        "",
        "Generated from `hub/hookspecs.py` by `python -m hub.hookdocs > docs/hooks.md`; do not edit by hand.",
        "",
        inspect.cleandoc(hookspecs.__doc__ or ""),
        "",
    ]
    for name, fn in order:
        spec = getattr(fn, "vethub_spec", {}) or {}
        first = " — first result wins" if spec.get("firstresult") else ""
        lines += [f"## `{name}{inspect.signature(cast(Callable[..., Any], fn))}`{first}", "",
                  inspect.cleandoc(fn.__doc__ or ""), ""]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
