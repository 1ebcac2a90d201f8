"""Image transports: found through vethub_image_transports, started and stopped by the core,
chosen for delivery by the company's settings; a failing start-up unwinds what started."""

from __future__ import annotations

from typing import Any

import pytest

from hub.hookspecs import hookimpl
from hub.imaging.transport import for_destination, transports
from hub.plugins import PluginError


class FolderTransport:
    name = "folder"
    destination_key = "folder_destination"
    delivery_job = "folder.deliver_case"

    def __init__(self, log: list[str], fail: bool = False) -> None:
        self.log, self.fail = log, fail

    async def start(self) -> None:
        if self.fail:
            raise OSError("folder not writable")
        self.log.append("folder:start")

    async def stop(self) -> None:
        self.log.append("folder:stop")


class FolderPlugin:
    def __init__(self, fail: bool = False) -> None:
        self.log: list[str] = []
        self.fail = fail

    @hookimpl
    def vethub_image_transports(self, hub: Any) -> list[FolderTransport]:
        return [FolderTransport(self.log, self.fail)]

    @hookimpl
    def vethub_job_handlers(self) -> dict[str, Any]:
        async def deliver(hub: Any, job: Any) -> None:
            self.log.append(f"deliver:{job.payload['case_id']}")

        return {"folder.deliver_case": deliver}


class Recorder:
    """A plugin started before the transports, to see the unwinding."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    @hookimpl
    def vethub_startup(self, hub: Any) -> None:
        self.log.append("recorder:start")

    @hookimpl
    def vethub_shutdown(self, hub: Any) -> None:
        self.log.append("recorder:stop")


async def test_transports_start_stop_and_are_chosen_by_destination(hub_factory: Any) -> None:
    plugin = FolderPlugin()
    hub = await hub_factory(plugins=[("folder", plugin)])
    assert {t.name for t in transports(hub)} == {"folder", "dicom"}
    assert plugin.log == ["folder:start"]
    chosen = for_destination(hub, {"folder_destination": {"path": "/srv/cases"}})
    assert chosen is not None and chosen.name == "folder"
    dicom = for_destination(hub, {"dicom_destination": {"host": "pacs", "port": 104, "ae_title": "PACS"}})
    assert dicom is not None and dicom.delivery_job == "dicom.forward_case"
    assert for_destination(hub, {}) is None  # the hub keeps the company's cases
    await hub.stop()
    assert plugin.log == ["folder:start", "folder:stop"]


async def test_a_failing_transport_unwinds_what_started(hub_factory: Any) -> None:
    plugin = FolderPlugin(fail=True)
    recorder = Recorder(plugin.log)
    with pytest.raises(PluginError, match="transport 'folder' failed to start: OSError: folder not writable"):
        await hub_factory(plugins=[("recorder", recorder), ("folder", plugin)])
    # the plugin that had started was shut down again; the transport that failed never started
    assert plugin.log == ["recorder:start", "recorder:stop"]


async def test_a_failing_plugin_start_unwinds_the_plugins_before_it(hub_factory: Any) -> None:
    log: list[str] = []

    class Broken:
        @hookimpl
        def vethub_startup(self, hub: Any) -> None:
            raise RuntimeError("no licence")

    # pluggy calls later-registered plugins first: "broken" runs after "recorder" started
    with pytest.raises(PluginError, match="'broken' failed in vethub_startup"):
        await hub_factory(plugins=[("broken", Broken()), ("recorder", Recorder(log))])
    assert log == ["recorder:start", "recorder:stop"]
