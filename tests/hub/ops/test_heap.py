"""Start-up objects are frozen out of the collector's full passes; later objects are not."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from hub.ops.heap import freeze_startup_objects


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the test session collects as usual


def test_start_up_objects_are_frozen_and_later_garbage_is_still_collected(unfrozen: None) -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self  # a cycle: only the collector frees it

    kept = Node()
    freeze_startup_objects()
    assert gc.get_freeze_count() > 0
    assert not gc.is_finalized(kept)  # still alive, and no longer walked by gc.collect()

    late = Node()
    alive = [late]
    del late
    collected_before = gc.get_stats()[2]["collected"]
    alive.clear()
    assert gc.collect() >= 1  # the cycle made after the freeze is garbage and is collected
    assert gc.get_stats()[2]["collected"] > collected_before
