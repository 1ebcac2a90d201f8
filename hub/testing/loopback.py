"""The lifecycle every fake provider shares: an aiohttp app on 127.0.0.1, port 0."""

from __future__ import annotations

from typing import ClassVar, Self

from aiohttp import ClientSession, web


class LoopbackServer:
    """``async with Fake() as fake:`` serves ``fake.routes()`` on a free loopback port.

    ``base_url`` is the root a client under test is pointed at (plus ``base_path``, e.g. Lob's
    ``/v1``); ``_session`` is a client session the fake uses to call the hub's webhooks.
    """

    base_path: ClassVar[str] = ""
    base_url: str = ""
    _runner: web.AppRunner | None = None
    _session: ClientSession | None = None

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    async def start(self) -> Self:
        app = web.Application()
        app.add_routes(self.routes())
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}{self.base_path}"
        self._session = ClientSession()
        return self

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
