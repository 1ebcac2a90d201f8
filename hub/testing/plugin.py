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
- ``hub.testing.fixtures_env``: ``needs(...)`` / ``skip_or_fail(...)``, skips that
  ``VETHUB_REQUIRE_<NAME>=1`` turns into failures (dcmtk, strace, tmpfs, O_TMPFILE).
"""

from __future__ import annotations

from hub.testing.fixtures_core import *  # noqa: F403

pytest_plugins = [
    "hub.testing.fixtures_env",
    "hub.testing.fixtures_dicom",
    "hub.testing.fixtures_messaging",
    "hub.testing.fixtures_channels",
    "hub.testing.fixtures_pims",
]
