"""What ``vethub check-config`` warns about: a valid file that will still not work.

(How each company receives its cases, with or without a destination, is printed by the
command itself.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def warnings(config: Any) -> list[str]:
    """One line per problem, naming the file and the dotted key."""
    file = str(config.path or "<config>")
    found = []
    for i, practice in enumerate(config.practices):
        for j, table in enumerate(practice.pims):
            drop = table.get("drop_dir")
            if drop is not None and not Path(str(drop)).is_dir():
                found.append(f"{file}: practices[{i}].pims[{j}].drop_dir: {drop} does not exist: the sync "
                             "will fail until it does (check the spelling, or create it)")
    return found
