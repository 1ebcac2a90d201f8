"""Typed application keys (no string keys, no module singletons)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from hub.core import Hub

HUB_KEY: web.AppKey[Hub] = web.AppKey("vethub_hub")
