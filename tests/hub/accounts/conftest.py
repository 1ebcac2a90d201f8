"""Fixtures for the accounts tests (the helpers live in accounts_world.py, beside this file)."""

from .accounts_world import world, world_factory  # noqa: F401
