"""``vethub backup``, ``vethub restore``, ``vethub verify`` (see :mod:`hub.ops.backup`)."""

from __future__ import annotations

import click


def commands() -> list[click.Command]:
    return []
