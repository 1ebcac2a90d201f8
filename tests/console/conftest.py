"""Fixtures for the console's browser tests (the helpers live in console_world.py, beside this file)."""

from .console_world import artifacts, browser, check, console_world  # noqa: F401
