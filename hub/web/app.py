"""The aiohttp application factory; one cleanup context per resource."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from hub.console import app as console
from hub.core import Hub
from hub.web import api_core, health, openapi, security
from hub.web.auth import auth_middleware
from hub.web.errors import error_middleware
from hub.web.keys import HUB_KEY


def create_app(hub: Hub, *, start_hub: bool = True, run_workers: bool = True) -> web.Application:
    """Build the app; its start-up starts the hub (database, plugins) and the job workers.

    ``start_hub=False`` serves a hub the caller already started (tests drive jobs themselves).
    """
    app = web.Application(middlewares=[error_middleware, auth_middleware], client_max_size=64 * 1024**2)
    app[HUB_KEY] = hub
    security.install(app)
    app.add_routes(health.routes)
    app.add_routes(api_core.routes)
    openapi.install(app)
    for channel in hub.channels.values():
        app.add_routes(channel.routes())
    for routes in hub.pm.hook.vethub_web_routes(hub=hub):
        app.add_routes(routes or [])
    console.install(app, hub)

    if start_hub:
        async def hub_ctx(_app: web.Application) -> AsyncIterator[None]:
            await hub.start()
            yield
            await hub.stop()

        app.cleanup_ctx.append(hub_ctx)

    if run_workers:
        async def workers_ctx(_app: web.Application) -> AsyncIterator[None]:
            hub.jobs.start()
            yield
            await hub.jobs.stop()

        app.cleanup_ctx.append(workers_ctx)
    return app
