"""Helpers for CLI commands (the core's and plugins'): load config, run against a hub."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from hub.config import ConfigError, HubConfig, load_config
from hub.core import Hub, create_hub
from hub.db.migrate import SchemaBehind
from hub.plugins import PluginError

T = TypeVar("T")

config_option = click.option(
    "--config", "config_path", envvar="VETHUB_CONFIG", default=None, metavar="PATH",
    help="Configuration file (default: $VETHUB_CONFIG or ./vethub.toml).",
)


def load_or_exit(config_path: str | None) -> HubConfig:
    try:
        return load_config(config_path)
    except ConfigError as err:
        for problem in err.problems:
            click.echo(f"error: {problem}", err=True)
        sys.exit(1)


def with_hub(config_path: str | None, fn: Callable[[Hub], Awaitable[T]], *, upgrade: bool | None = None) -> T:
    """Run ``fn(hub)`` on a hub whose database is ready; plugins' start-up hooks are not run."""
    config = load_or_exit(config_path)

    async def _main() -> Any:
        hub = create_hub(config)
        try:
            await hub.start(lifecycle=False, upgrade=upgrade)
            return await fn(hub)
        finally:
            await hub.stop()

    try:
        return asyncio.run(_main())
    except (SchemaBehind, PluginError) as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(1)
