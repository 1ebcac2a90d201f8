"""Keep the objects a process builds at start-up out of the garbage collector's full passes.

A running hub holds a few hundred thousand long-lived objects made while it started: modules,
SQLAlchemy's metadata and compiled statements, pydantic's validators, Jinja templates, the
route table. Python's oldest-generation collection walks every one of them each time it runs:
in `vethub run` under API load these passes took 30-100 ms each, with the GIL held, so every
request in flight (and every DICOM association thread) waited that long; they were most of the
API's p99 (docs/performance.md). None of these objects becomes garbage while the process
lives, so they are moved out of the collector's sight once start-up is done.
"""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Collect start-up's garbage once, then freeze what survives (``gc.freeze``).

    Call after start-up and before serving. Frozen objects are never collected: a cycle
    among them is kept, which is what a long-lived start-up object is anyway. Objects made
    afterwards (requests, rows, messages) are collected as before. A second call walks only
    what was made since the first, so `vethub run` calls it once before its listeners start
    (the long pass, with no connection waiting on it) and once after.
    """
    gc.collect()
    gc.freeze()
