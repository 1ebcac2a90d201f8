"""Skips that CI can turn into failures: ``VETHUB_REQUIRE_<NAME>=1``.

A test that needs something of its environment (dcmtk, strace, a mountable tmpfs, a
filesystem with ``O_TMPFILE``) skips with a reason where it is missing, so the suite runs
anywhere. CI sets ``VETHUB_REQUIRE_<NAME>=1`` for each such thing it provides, and then a
missing one fails the test instead of skipping it silently (``.ci/run``; docs/testing.md
lists the switches)::

    pytestmark = needs("DCMTK", shutil.which("storescu") is not None, "dcmtk is not installed")

    def test_x():
        if not works():
            skip_or_fail("TMPFS", "cannot mount a tmpfs here")
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

__all__ = ["REQUIRE_PREFIX", "needs", "required", "skip_or_fail"]

REQUIRE_PREFIX = "VETHUB_REQUIRE_"
_MARK = "vethub_needs"


def required(name: str) -> bool:
    """True when ``VETHUB_REQUIRE_<name>=1``: the environment promises ``name``."""
    return os.environ.get(REQUIRE_PREFIX + name) == "1"


def skip_or_fail(name: str, reason: str) -> NoReturn:
    """Skip the running test for ``reason``, or fail it when ``name`` is required."""
    if required(name):
        pytest.fail(f"{REQUIRE_PREFIX}{name}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def needs(name: str, available: bool, reason: str) -> pytest.MarkDecorator:
    """A mark: the test runs when ``available``; otherwise it is skipped (``reason``), or
    failed when ``VETHUB_REQUIRE_<name>=1``."""
    return getattr(pytest.mark, _MARK)(name=name, available=available, reason=reason)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{_MARK}(name, available, reason): skip, or fail with {REQUIRE_PREFIX}<name>=1"
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers(_MARK):
        if not mark.kwargs["available"]:
            skip_or_fail(mark.kwargs["name"], mark.kwargs["reason"])
