"""Telling "the database is unreachable" apart from a bug, so the API can answer 503 with
Retry-After and the job workers can back off, instead of 500s and a log full of tracebacks.

Recognised by the exception's class names along its chain (SQLAlchemy wraps the driver's), so
the core imports no driver: refused or dropped connections, a server shutting down or refusing
connections to the database, a pool that timed out, SQLite unable to open its file.
"""

from __future__ import annotations

import errno

_NAMES = frozenset({
    # SQLAlchemy
    "DisconnectionError", "TimeoutError",
    # asyncpg
    "ConnectionDoesNotExistError", "ConnectionFailureError", "CannotConnectNowError",
    "AdminShutdownError", "CrashShutdownError", "TooManyConnectionsError",
    "ObjectInUseError", "InterfaceError", "ConnectionRejectionError",
    "PostgresConnectionError", "InternalClientError",
})
#: PostgreSQL SQLSTATEs meaning "not now": connection exceptions (08), operator intervention
#: (57P0x), too many connections (53300), and 55000 (the database does not allow connections).
_SQLSTATE_PREFIXES = ("08", "57P", "53300", "55000")
_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET, errno.EHOSTUNREACH, errno.ENETUNREACH,
           errno.ETIMEDOUT, errno.EPIPE, errno.ECONNABORTED}


def is_unavailable(err: BaseException) -> bool:
    """True when ``err`` (or its cause) says the database cannot be reached right now."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [err]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if getattr(e, "connection_invalidated", False):
            return True
        if type(e).__name__ in _NAMES and type(e).__module__.split(".")[0] in ("sqlalchemy", "asyncpg"):
            return True
        if isinstance(e, ConnectionError) or (isinstance(e, OSError) and e.errno in _ERRNOS):
            return True
        sqlstate = getattr(e, "sqlstate", None) or getattr(e, "pgcode", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_SQLSTATE_PREFIXES):
            return True
        if type(e).__name__ == "OperationalError" and "unable to open database" in str(e):
            return True
        todo += [e.__cause__, e.__context__, getattr(e, "orig", None)]
    return False
