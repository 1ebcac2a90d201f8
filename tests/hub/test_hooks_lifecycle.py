"""The lifecycle and registration hooks, through a real plugin object on a real hub."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from click.testing import CliRunner

from hub import cli
from hub.hookspecs import hookimpl
from hub.imaging.cases import decide_route
from hub.imaging.routing import AccountFacts, CaseRequest, RouteDecision
from hub.messaging.channel import OutboundMessage, SendResult
from hub.plugins import get_plugin_manager


class PigeonChannel:
    """A channel a vendor might ship: it only has to satisfy the Channel protocol."""

    name = "pigeon"

    def __init__(self) -> None:
        self.closed = False

    async def send(self, message: OutboundMessage) -> SendResult:
        return SendResult(provider_id="coo-1", status="sent")

    def routes(self) -> list[web.RouteDef]:
        async def callback(request: web.Request) -> web.Response:
            return web.Response(text="coo")

        return [web.post("/webhooks/pigeon", callback)]

    async def health(self) -> tuple[bool, str]:
        return True, "flying"

    async def close(self) -> None:
        self.closed = True


class Lifecycle:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.channel = PigeonChannel()

    @hookimpl
    def vethub_startup(self, hub: Any) -> Any:
        async def start() -> None:
            self.calls.append(f"startup:{hub.config.hub.public_url}")
        return start()

    @hookimpl
    def vethub_shutdown(self, hub: Any) -> None:
        self.calls.append("shutdown")

    @hookimpl
    def vethub_web_routes(self, hub: Any) -> list[web.RouteDef]:
        async def hello(request: web.Request) -> web.Response:
            return web.json_response({"hello": "plugin"})

        return [web.get("/api/plugin-hello", hello)]

    @hookimpl
    def vethub_channels(self, hub: Any) -> list[PigeonChannel]:
        return [self.channel]


async def test_startup_shutdown_routes_and_channels(hub_factory: Any) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from hub.web.app import create_app

    probe = Lifecycle()
    hub = await hub_factory(plugins=[("lifecycle", probe)])
    assert probe.calls == ["startup:http://127.0.0.1:8080"]  # awaited, once
    assert hub.channels["pigeon"] is probe.channel

    client = TestClient(TestServer(create_app(hub, start_hub=False, run_workers=False), port=0))
    await client.start_server()
    try:
        assert (await (await client.post("/webhooks/pigeon")).text()) == "coo"
        # a plugin's /api route needs a token like every other, and is in the spec
        assert (await client.get("/api/plugin-hello")).status == 401
        spec = await (await client.get("/api/openapi.json")).json()
        assert "get" in spec["paths"]["/api/plugin-hello"]
    finally:
        await client.close()
    await hub.stop()
    assert probe.calls[-1] == "shutdown" and probe.channel.closed


class HouseRule:
    """Every ultrasound goes to account 7, before the built-in rule is asked."""

    @hookimpl(tryfirst=True)
    def vethub_route_case(self, case: CaseRequest, study: Any, accounts: Any) -> RouteDecision | None:
        return RouteDecision.to(7, "house rule: US to 7") if "US" in study.modalities else None


async def test_route_case_house_rule_answers_first(hub_factory: Any) -> None:
    from hub.imaging.models import Study

    hub = await hub_factory(plugins=[("house", HouseRule())])
    accounts = [AccountFacts(account_id=1, company_id=1, company_name="Rads", company_modalities=("CT", "US"),
                             account_modalities=(), approved_for_access=True, status="active",
                             auto_submit=False)]
    request = CaseRequest(practice_id=1, study_id=1, clinical_history="", question="", submitted_by="t")
    us = Study(id=1, practice_id=1, study_instance_uid="1.2.3", modalities=["US"],
               instance_count=1, status="stable")
    assert decide_route(hub, request, us, accounts) == RouteDecision.to(7, "house rule: US to 7")
    ct = Study(id=2, practice_id=1, study_instance_uid="1.2.4", modalities=["CT"],
               instance_count=1, status="stable")
    decision = decide_route(hub, request, ct, accounts)
    assert decision.account_id == 1  # the built-in policy answered


GREET = '''
import click
from hub.hookspecs import hookimpl

@click.command("greet", help="Say hello. Example: vethub greet")
def greet():
    click.echo("hello from a plugin")

@hookimpl
def vethub_cli_commands():
    return [greet]
'''


def test_cli_commands_from_a_plugin(tmp_path: Any, monkeypatch: Any) -> None:
    from tests.hub.test_plugins import make_distribution

    root = tmp_path / "site"
    root.mkdir()
    make_distribution(root, "vethub_greet", "greet", "vethub_greet_plugin", GREET)
    monkeypatch.syspath_prepend(str(root))
    assert "greet" in {i.name for i in get_plugin_manager().describe()}
    group = cli.cli
    cli._add_plugin_commands(group)
    try:
        result = CliRunner().invoke(group, ["greet"])
        assert result.exit_code == 0 and result.output == "hello from a plugin\n"
    finally:
        group.commands.pop("greet", None)
