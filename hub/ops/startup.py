"""Start-up checks and start-up errors an operator can act on.

Before the hub starts, :func:`preflight` checks what it cannot run without — the database
file, the data dir, the image store — and raises :class:`StartupError` naming the file, the
config key and a remedy. Whatever else fails while starting (a port in use, a plugin) is turned
into the same one line by :func:`explain`; the traceback is for ``--debug`` only.

Exit codes of ``vethub run`` (docs/operator-guide.md):
"""

from __future__ import annotations

import errno
import os
import sqlite3
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from hub.ops.storage import storage_roots, write_probe


class ExitCode(IntEnum):
    """The process exit codes, one per kind of start-up failure, for service managers."""
    OK = 0
    CONFIG = 1  # the configuration is invalid, a plugin failed to start, or the schema is behind
    USAGE = 2  # a command-line mistake (click)
    DATABASE = 3  # the database cannot be opened, written, migrated or reached
    STORAGE = 4  # the data dir or the image store cannot be created or written
    PORT = 5  # a listening port is in use or not allowed


__doc__ += "".join(f"\n- ``{c.value}`` {c.name.lower()}" for c in ExitCode)


@dataclass
class StartupError(Exception):
    """Something the hub needs is unusable: where (a file or address), the key, the remedy."""

    where: str
    key: str
    problem: str
    remedy: str
    code: ExitCode

    def __str__(self) -> str:
        return f"{self.where}: {self.key}: {self.problem}; {self.remedy}"


def _sqlite_file(url: str) -> Path | None:
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


def check_sqlite(path: Path) -> None:
    """The SQLite file at ``path`` can be created or opened, read and written."""
    where, key = str(path), "database.url"
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StartupError(str(parent), key, f"cannot create the database's folder ({err.strerror})",
                           "create it or point database.url elsewhere", ExitCode.DATABASE) from err
    if path.exists() and not path.is_file():
        raise StartupError(where, key, "is not a file", "point database.url at a SQLite file",
                           ExitCode.DATABASE)
    probe = parent / f".vethub-probe-{os.getpid()}"
    try:
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise StartupError(str(parent), key, f"the database's folder is not writable ({err.strerror}); "
                           "SQLite writes its journal beside the file",
                           "make it writable by the hub's user", ExitCode.DATABASE) from err
    if not path.exists():
        return  # created by the first migration
    try:
        conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=5)
    except sqlite3.Error as err:
        raise StartupError(where, key, f"cannot be opened for writing ({err})",
                           "check the file's owner and mode (the hub needs read and write)",
                           ExitCode.DATABASE) from err
    try:
        conn.execute("PRAGMA schema_version").fetchone()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    except sqlite3.DatabaseError as err:
        text = str(err)
        if "not a database" in text or "malformed" in text:
            remedy = "restore it from a backup (vethub restore), or move it away to start empty"
        elif "readonly" in text or "read-only" in text:
            remedy = "make the file and its folder writable by the hub's user"
        else:
            remedy = "check the file, its folder and the disk"
        raise StartupError(where, key, text, remedy, ExitCode.DATABASE) from err
    finally:
        conn.close()


def check_storage(hub_or_config: Any) -> None:
    """The data dir and every storage root can be created and written."""
    for name, root in storage_roots(hub_or_config).items():
        key = "hub.data_dir" if name == "data_dir" else f"{name}.storage_root"
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StartupError(str(root), key, f"cannot be created ({err.strerror})",
                               f"create it, make it writable by the hub's user, or change {key}",
                               ExitCode.STORAGE) from err
        why = write_probe(root)
        if why is not None:
            raise StartupError(str(root), key, why.split(": ", 1)[-1],
                               f"make it writable by the hub's user, or change {key}", ExitCode.STORAGE)


def preflight(hub: Any) -> None:
    path = _sqlite_file(hub.config.database.url)
    if path is not None:
        check_sqlite(path)
    check_storage(hub)


_PORT_ERRNOS = {errno.EADDRINUSE: "is in use by another process",
                errno.EACCES: "needs privileges (ports below 1024)",
                errno.EADDRNOTAVAIL: "is not an address of this machine"}


def explain(err: BaseException, config: Any, *, host: str | None = None, port: int | None = None) -> StartupError | None:
    """The :class:`StartupError` behind a failure at start-up, or None when it is not known."""
    chain = _chain(err)
    for e in chain:
        if isinstance(e, StartupError):
            return e
    plugin = _plugin_of(chain)
    for e in chain:
        if isinstance(e, OSError) and e.errno in _PORT_ERRNOS:
            where, key = _listener(e, config, plugin, host, port)
            return StartupError(where, key, f"the port {_PORT_ERRNOS[e.errno]}",
                                f"stop the other process or choose another {key}", ExitCode.PORT)
    url = make_url(config.database.url)
    for e in chain:
        name = type(e).__name__
        if name in ("OperationalError", "InterfaceError", "ConnectionRefusedError",
                    "InvalidCatalogNameError", "InvalidPasswordError", "CannotConnectNowError") \
                or (isinstance(e, OSError) and e.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH)):
            where = url.render_as_string(hide_password=True)
            return StartupError(where, "database.url", f"the database cannot be used: {_first_line(e)}",
                                "check that it is running and the URL, user and password are right",
                                ExitCode.DATABASE)
    return None


def _listener(err: OSError, config: Any, plugin: str | None, host: str | None,
              port: int | None) -> tuple[str, str]:
    """(address, config key) of the listener that could not bind: from the address in the
    error (asyncio and socket.create_server name it), else the plugin that failed, else HTTP."""
    import re

    match = re.search(r"address \('([^']*)', (\d+)\)", str(err))
    http = (host or config.http.host, config.http.port if port is None else port)
    if match:
        bound = (match.group(1), int(match.group(2)))
        for name in config.redacted():
            section = config.section(name)
            if section is not None and getattr(section, "port", None) == bound[1] and bound[1] != http[1]:
                return f"{bound[0]}:{bound[1]}", f"{name}.port"
        return f"{bound[0]}:{bound[1]}", "http.port"
    if plugin:
        section = config.section(plugin)
        return f"{getattr(section, 'host', '?')}:{getattr(section, 'port', '?')}", f"{plugin}.port"
    return f"{http[0]}:{http[1]}", "http.port"


def _chain(err: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [err]
    while todo:
        e = todo.pop(0)
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        todo += [e.__cause__, e.__context__, getattr(e, "orig", None)]
        if isinstance(e, BaseExceptionGroup):
            todo += list(e.exceptions)
    return seen


def _plugin_of(chain: list[BaseException]) -> str | None:
    import re

    for e in chain:
        if type(e).__name__ == "PluginError":
            match = re.search(r"plugin '([^']+)'", str(e))
            if match:
                return match.group(1)
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


def report(err: BaseException, config: Any, *, debug: bool, host: str | None = None,
           port: int | None = None) -> int:
    """Print one line on stderr for a failed start (the traceback too with ``debug``); the
    exit code."""
    import sys
    import traceback

    from hub.db.migrate import SchemaBehind
    from hub.errors import PluginError

    if debug:
        traceback.print_exception(err, file=sys.stderr)
    if isinstance(err, SchemaBehind):  # says itself what to run
        print(f"error: {err}", file=sys.stderr, flush=True)
        return int(ExitCode.CONFIG)
    known = explain(err, config, host=host, port=port)
    if known is not None:
        line, code = str(known), int(known.code)
    elif isinstance(err, PluginError):
        line, code = str(err), int(ExitCode.CONFIG)
    else:
        line, code = f"start-up failed: {_first_line(err)}", int(ExitCode.CONFIG)
    hint = "" if debug else " (vethub run --debug shows the traceback)"
    print(f"error: {line}{hint}", file=sys.stderr, flush=True)
    return code
