"""The clients domain as a built-in plugin: its config section, routes and CLI."""

from __future__ import annotations

from typing import Any

import click
from aiohttp import web

from hub.clients.config import ClientsConfig
from hub.hookspecs import hookimpl


@hookimpl
def vethub_config_sections() -> dict[str, Any]:
    return {"clients": ClientsConfig}


@hookimpl
def vethub_web_routes(hub: Any) -> list[web.AbstractRouteDef]:
    from hub.clients import api

    return list(api.routes)


@hookimpl
def vethub_cli_commands() -> list[click.Command]:
    from hub.clients.cli import clients_group

    return [clients_group]
