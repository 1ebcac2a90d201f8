"""One route style: every handler is a module-level function (or a channel's method) on a
table, short enough to read on one screen."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from aiohttp import web

from hub.web.app import create_app

ROOT = Path(__file__).parents[3]
MAX_LINES = 60


def _our_handlers(app: web.Application) -> dict[str, Any]:
    """Every route's handler that lives in the hub, a plugin or a connector, by where it is."""
    found = {}
    for route in app.router.routes():
        handler = inspect.unwrap(route.handler)  # ApiRoutes wraps handlers with functools.wraps
        source = inspect.getsourcefile(handler)
        if source is None or not Path(source).resolve().is_relative_to(ROOT):
            continue  # aiohttp's own (static files, default handlers)
        found[f"{route.method} {route.resource.canonical if route.resource else '?'}"] = handler
    return found


async def test_route_handlers_are_module_level_and_short(hub: Any) -> None:
    handlers = _our_handlers(create_app(hub, start_hub=False, run_workers=False))
    assert len(handlers) > 100  # the walk sees the hub's routes, not an empty app
    closures, long = [], []
    for route, handler in sorted(handlers.items()):
        where = f"{Path(inspect.getsourcefile(handler) or '?').relative_to(ROOT)}:{handler.__qualname__}"
        if "<locals>" in handler.__qualname__:
            closures.append(f"{route} -> {where}")
        lines, _ = inspect.getsourcelines(handler)
        if len(lines) > MAX_LINES:
            long.append(f"{route} -> {where} is {len(lines)} lines")
    assert closures == [], ("route handlers built in a closure; declare them on a module-level "
                            "table (ApiRoutes for /api, web.RouteTableDef for pages):\n" + "\n".join(closures))
    assert long == [], (f"route handlers over {MAX_LINES} lines; move the work into helpers so "
                        "a handler reads on one screen:\n" + "\n".join(long))
