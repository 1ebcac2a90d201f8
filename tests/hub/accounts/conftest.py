"""Fixtures for the accounts tests (the helpers live in accounts_world.py, beside this file)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from accounts_world import world, world_factory  # noqa: E402, F401
