"""Image transports: what the core starts, stops and asks to deliver a case.

A transport is found through ``vethub_image_transports(hub)`` and satisfies
:class:`ImageTransport`. The core starts every transport after the plugins' start-up hooks and
stops them in reverse order before the plugins' shutdown hooks. To deliver a routed case it picks
the transport whose ``destination_key`` the company's settings hold (``"dicom_destination"`` for
the built-in DICOM transport) and enqueues that transport's ``delivery_job`` with
``{"case_id": ...}``; the transport registered the handler for that job kind through
``vethub_job_handlers``. A company no transport delivers to gets its cases in the hub itself.

So the core never names a transport's jobs: ``hub/`` knows only this protocol.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

from hub.plugins import PluginError
from hub.state import HubKey

if TYPE_CHECKING:
    from hub.core import Hub

TRANSPORTS: HubKey[list[ImageTransport]] = HubKey("image_transports")


@runtime_checkable
class ImageTransport(Protocol):
    """One way images come in and go out (DICOM C-STORE today; DICOMweb or a folder later)."""

    #: short and stable: shown to operators and stored as a case's ``delivery``
    name: str
    #: the key in a company's ``settings`` that names a destination this transport delivers to,
    #: or ``None`` for an inbound-only transport
    destination_key: str | None
    #: the job kind the core enqueues (payload ``{"case_id": int}``) to deliver a case
    delivery_job: str | None

    async def start(self) -> None:
        """Begin receiving (bind a port...). Called once when the hub starts; raising stops it."""

    async def stop(self) -> None:
        """Stop receiving and release what :meth:`start` took. Called once, at shutdown."""


def collect(hub: Hub) -> list[ImageTransport]:
    """Every plugin's transports for ``hub``; a duplicate name is a plugin error."""
    found: list[ImageTransport] = []
    for impl in hub.pm.hook.vethub_image_transports.get_hookimpls():
        make = cast("Any", impl.function)
        for transport in make(hub=hub) or ():
            if not isinstance(transport, ImageTransport):
                raise PluginError(f"plugin {impl.plugin_name!r}: {transport!r} is not an ImageTransport")
            if any(t.name == transport.name for t in found):
                raise PluginError(f"plugin {impl.plugin_name!r}: a transport named {transport.name!r} exists")
            found.append(transport)
    return found


def transports(hub: Hub) -> Sequence[ImageTransport]:
    return hub.state.get(TRANSPORTS) or ()


def for_destination(hub: Hub, settings: Mapping[str, Any] | None) -> ImageTransport | None:
    """The transport that delivers to a company with these settings, or None (the hub keeps
    its cases)."""
    settings = settings or {}
    for transport in transports(hub):
        key = transport.destination_key
        if key and isinstance(settings.get(key), dict):
            return transport
    return None


async def start_all(hub: Hub) -> None:
    """Start every transport; one that fails stops the ones already started, then re-raises."""
    started: list[ImageTransport] = []
    hub.state[TRANSPORTS] = collect(hub)
    try:
        for transport in hub.state[TRANSPORTS]:
            try:
                await transport.start()
            except Exception as err:
                # Named like a plugin's failed start-up, so `vethub run` reports it the same way.
                raise PluginError(f"image transport {transport.name!r} failed to start: "
                                  f"{type(err).__name__}: {err}") from err
            started.append(transport)
    except BaseException:
        for transport in reversed(started):
            await transport.stop()
        hub.state.pop(TRANSPORTS)
        raise


async def stop_all(hub: Hub) -> None:
    started: list[ImageTransport] = hub.state.pop(TRANSPORTS) or []
    for transport in reversed(started):
        await transport.stop()
