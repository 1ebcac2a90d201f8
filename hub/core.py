"""The Hub: configuration, plugins, database and job queue, handed to every service and plugin."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

import aiohttp
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from hub.clock import Clock, SystemClock
from hub.config import HubConfig
from hub.db import migrate
from hub.db.engine import (
    PG_READERS,
    READ_POOL_SIZE,
    is_sqlite,
    make_engine,
    make_read_engine,
    make_sessionmaker,
)
from hub.db.readers import PgReaders, Readers, SqliteReaders
from hub.db.transactions import run_read
from hub.jobs import JobQueue
from hub.plugins import HubPluginManager, PluginError
from hub.state import HubState

log = logging.getLogger(__name__)

T = TypeVar("T")

class Hub:
    """What a running hub is made of; built by :func:`create_hub`, started by :meth:`start`."""

    def __init__(self, config: HubConfig, pm: HubPluginManager, clock: Clock | None = None) -> None:
        self.config = config
        self.pm = pm
        self.clock: Clock = clock or SystemClock()
        self.engine: AsyncEngine = make_engine(config.database.url)
        self.sessionmaker: async_sessionmaker[AsyncSession] = make_sessionmaker(self.engine)
        # Reads that write nothing use their own connections on SQLite (see make_read_engine).
        self.read_engine: AsyncEngine = make_read_engine(config.database.url, self.engine)
        self.read_sessionmaker: async_sessionmaker[AsyncSession] = (
            self.sessionmaker if self.read_engine is self.engine else make_sessionmaker(self.read_engine))
        # Hub.read skips the async engine's checkout per read (see hub.db.readers).
        self._readers: Readers[Any] | None = None
        if not self.is_sqlite:
            self._readers = PgReaders(self.engine, PG_READERS)
        elif (path := make_url(config.database.url).database) and path != ":memory:":
            self._readers = SqliteReaders(path, READ_POOL_SIZE)
        self.jobs = JobQueue(self)
        self.http: aiohttp.ClientSession | None = None
        self.channels: dict[str, Any] = {}
        self.started = False
        self.state = HubState()
        self._stack = AsyncExitStack()
        # Registrations need no I/O and must precede the web app's route table.
        self._register_job_handlers()
        self._register_channels()

    @property
    def data_dir(self) -> Path:
        return self.config.hub.data_dir

    @property
    def config_path(self) -> Path | None:
        return self.config.path

    @property
    def is_sqlite(self) -> bool:
        return is_sqlite(self.config.database.url)

    def read_session(self) -> AsyncSession:
        """A session for reads only (``async with hub.read_session() as session``).

        On SQLite it never waits for the writer nor holds it up; a write through it fails.
        Use :meth:`transaction` for anything that writes.
        """
        return self.read_sessionmaker()

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run a synchronous read ``fn(connection)`` in one hand-off, on one of the connections
        kept for reads (:mod:`hub.db.readers`; on SQLite they never take the write lock): for
        hot read paths, where a session's several round trips cost more than the query.
        ``fn`` must not write."""
        if self._readers is not None:
            return await self._readers.run(fn)
        return await run_read(self.read_engine, fn)

    async def read_orm(self, fn: Callable[[Session], T]) -> T:
        """:meth:`read` with a synchronous ORM session on the read connection: loading ORM
        objects in the database's thread, in one hand-off. What ``fn`` returns is detached and
        keeps the attributes it loaded."""
        def run(conn: Connection) -> T:
            with Session(bind=conn, expire_on_commit=False) as session:
                return fn(session)

        return await self.read(run)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session whose transaction commits when the block ends, or rolls back on error."""
        async with self.sessionmaker() as session, session.begin():
            yield session

    async def fire(self, hook_name: str, **kwargs: Any) -> list[Any]:
        """Call an event hook and await whatever awaitables the implementations return.

        One failing implementation is logged with its plugin's name and does not stop the
        others: an event has already happened and every listener deserves to hear of it.
        """
        caller = getattr(self.pm.hook, hook_name)
        results = []
        for impl in reversed(caller.get_hookimpls()):
            try:
                result = _call(impl, kwargs)
                if inspect.isawaitable(result):
                    result = await result
                results.append(result)
            except Exception:
                log.exception("plugin %s failed in %s", impl.plugin_name, hook_name)
        return results

    async def fire_each(self, hook_name: str, events: Sequence[Mapping[str, Any]]) -> None:
        """:meth:`fire` once per keyword set of ``events``, in order, except that every
        implementation is called for every event before the first awaitable is awaited (then
        each is awaited, in the same order): an implementation can gather a burst of events
        (a committed batch of instances) into one piece of work that each of them awaits."""
        started: list[tuple[Any, Any]] = []
        impls = list(reversed(getattr(self.pm.hook, hook_name).get_hookimpls()))
        for kwargs in events:
            for impl in impls:
                try:
                    started.append((impl, _call(impl, kwargs)))
                except Exception:
                    log.exception("plugin %s failed in %s", impl.plugin_name, hook_name)
        for n, (impl, result) in enumerate(started):
            try:
                if inspect.isawaitable(result):
                    await result
            except asyncio.CancelledError:
                for _, left in started[n + 1 :]:  # close what will never run: no warnings
                    if inspect.iscoroutine(left):
                        left.close()
                raise
            except Exception:
                log.exception("plugin %s failed in %s", impl.plugin_name, hook_name)

    async def prepare_database(self, *, upgrade: bool | None = None) -> None:
        """Upgrade an embedded SQLite database; require PostgreSQL to be upgraded by an operator."""
        url = make_url(self.config.database.url)
        if self.is_sqlite and url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        if upgrade if upgrade is not None else self.is_sqlite:
            await migrate.upgrade(self.engine)
        else:
            await migrate.ensure_current(self.engine)

    async def start(self, *, upgrade: bool | None = None, lifecycle: bool = True) -> None:
        """Database, config-declared entities, then (unless a CLI command) plugins and transports.

        Everything started is pushed on one exit stack as it starts, so a start-up that fails
        half-way unwinds exactly what had started, in reverse, and :meth:`stop` does the same.
        """
        from hub.seed import apply_config_entities

        stack = AsyncExitStack()
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            await self.prepare_database(upgrade=upgrade)
            stack.push_async_callback(self._dispose_engines)
            self.http = aiohttp.ClientSession()
            stack.push_async_callback(self._close_http)
            stack.push_async_callback(self._close_channels)
            async with self.transaction() as session:
                await apply_config_entities(session, self.config)
            if lifecycle:
                await self._start_plugins(stack)
                from hub.imaging import transport

                await transport.start_all(self)
                stack.push_async_callback(transport.stop_all, self)
                self.started = True
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack

    async def stop(self) -> None:
        await self.jobs.stop()
        stack, self._stack = self._stack, AsyncExitStack()
        await stack.aclose()
        self.started = False

    async def _start_plugins(self, stack: AsyncExitStack) -> None:
        """Each plugin's ``vethub_startup``; its ``vethub_shutdown`` is pushed once it started."""
        shutdowns = {impl.plugin_name: impl for impl in self.pm.hook.vethub_shutdown.get_hookimpls()}
        starts = list(reversed(self.pm.hook.vethub_startup.get_hookimpls()))
        started = {impl.plugin_name for impl in starts}
        # A plugin with a shutdown hook and no start-up hook is shut down last, as before.
        for name, impl in shutdowns.items():
            if name not in started:
                stack.push_async_callback(self._call_shutdown, impl)
        for impl in starts:
            try:
                result = impl.function(**{k: v for k, v in {"hub": self}.items() if k in impl.argnames})
                if inspect.isawaitable(result):
                    await result
            except Exception as err:
                raise PluginError(f"plugin {impl.plugin_name!r} failed in vethub_startup: "
                                  f"{type(err).__name__}: {err}") from err
            if impl.plugin_name in shutdowns:
                stack.push_async_callback(self._call_shutdown, shutdowns[impl.plugin_name])

    async def _call_shutdown(self, impl: Any) -> None:
        try:
            result = impl.function(**{k: v for k, v in {"hub": self}.items() if k in impl.argnames})
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("plugin %s failed in vethub_shutdown", impl.plugin_name)

    async def _close_channels(self) -> None:
        for channel in self.channels.values():
            close = getattr(channel, "close", None)
            if close is not None:
                try:
                    await close()
                except Exception:
                    log.exception("channel %s failed to close", getattr(channel, "name", channel))

    async def _close_http(self) -> None:
        if self.http is not None:
            await self.http.close()
            self.http = None

    async def _dispose_engines(self) -> None:
        await self.engine.dispose()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()
        if self._readers is not None:
            await self._readers.close()

    def _register_job_handlers(self) -> None:
        for impl in self.pm.hook.vethub_job_handlers.get_hookimpls():
            register = cast(Callable[[], Mapping[str, Any] | None], impl.function)
            for kind, handler in (register() or {}).items():
                try:
                    self.jobs.register(kind, handler)
                except ValueError as err:
                    raise PluginError(f"plugin {impl.plugin_name!r}: {err}") from err

    def _register_channels(self) -> None:
        for impl in self.pm.hook.vethub_channels.get_hookimpls():
            try:
                make = cast(Callable[..., Sequence[Any] | None], impl.function)
                channels = make(hub=self) or []
            except Exception as err:
                raise PluginError(f"plugin {impl.plugin_name!r} failed in vethub_channels: {err}") from err
            for channel in channels:
                if channel.name in self.channels:
                    raise PluginError(f"plugin {impl.plugin_name!r}: a channel named {channel.name!r} exists already")
                self.channels[channel.name] = channel


def create_hub(config: HubConfig, pm: HubPluginManager | None = None, clock: Clock | None = None) -> Hub:
    from hub.plugins import get_plugin_manager

    return Hub(config, pm or get_plugin_manager(config.plugins.disabled), clock)


def _call(impl: Any, kwargs: Mapping[str, Any]) -> Any:
    """Call a hook implementation with the arguments it names (pluggy's calling convention)."""
    return impl.function(**{k: kwargs[k] for k in impl.argnames if k in kwargs})
