"""VetHub's pytest plugin: the fixtures the hub's own suite uses, for plugin authors too.

Registered through the ``pytest11`` entry point, so installing vethub makes these fixtures
available in any test suite:

- ``db_url``: a fresh database per test, parametrised over SQLite and PostgreSQL. The
  PostgreSQL variant needs ``VETHUB_TEST_POSTGRES_URL`` (an asyncpg URL to a server where the
  user may create databases) and skips with a reason without it — unless
  ``VETHUB_REQUIRE_POSTGRES=1``, when it fails instead (CI must not skip silently).
- ``make_config``: a validated HubConfig on that database with a temporary data dir.
- ``hub_factory`` / ``hub``: a started hub (plugins' start-up hooks run; job workers do not —
  drive jobs with ``await hub.jobs.run_until_idle()``).
- ``api``: an aiohttp test client for the hub's app, with ``await api.as_role(...)``.
- ``frozen_clock``, ``write_config``, ``free_port``.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from hub.testing.fixtures_core import *  # noqa: F403
from hub.testing.fixtures_core import PG_ENV, REQUIRE_PG_ENV

_LEFT_OUT = pytest.StashKey[int]()

pytest_plugins = [
    "hub.testing.fixtures_dicom",
    "hub.testing.fixtures_messaging",
    "hub.testing.fixtures_channels",
    "hub.testing.fixtures_pims",
]


def _needs_postgres(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    if callspec is not None and callspec.params.get("db_url") == "postgresql":
        return True
    return "postgres_url" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without a PostgreSQL URL, leave its tests out with one line, not one skip per test."""
    if os.environ.get(PG_ENV) or os.environ.get(REQUIRE_PG_ENV) == "1":
        return
    left_out = [item for item in items if _needs_postgres(item)]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [item for item in items if not _needs_postgres(item)]
        config.stash[_LEFT_OUT] = len(left_out)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    count = config.stash.get(_LEFT_OUT, 0)
    if count:
        terminalreporter.write_line(
            f"{count} PostgreSQL tests not run: set {PG_ENV}="
            "postgresql+asyncpg://postgres@127.0.0.1:5432/test (PostgreSQL usually listens there "
            "on a development machine; CI sets it)."
        )
