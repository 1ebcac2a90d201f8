"""The ezyVet connector's health check, without a hub."""

from __future__ import annotations

from connectors.ezyvet.connector import EzyVetConfig, EzyVetConnector
from hub.pims.connector import ConnectorContext, PimsConnector

CONTEXT = ConnectorContext("oak", "US")


async def test_ezyvet_health(fake_ezyvet) -> None:
    fake_ezyvet.add_contact("A", "B")
    good = EzyVetConnector(EzyVetConfig(base_url=fake_ezyvet.base_url, client_id=fake_ezyvet.client_id,
                                        client_secret=fake_ezyvet.client_secret,
                                        partner_id=fake_ezyvet.partner_id), CONTEXT)
    assert isinstance(good, PimsConnector)
    health = await good.health()
    assert health.ok and health.detail.startswith("1 contacts;")
    assert "no communications opt-out flag" in health.detail
    bad = EzyVetConnector(EzyVetConfig(base_url=fake_ezyvet.base_url, client_id="nope",
                                       client_secret="x", partner_id=fake_ezyvet.partner_id), CONTEXT)
    health = await bad.health()
    # ezyVet's messages body is read for the reason
    assert not health.ok and "401" in health.detail and "Client authentication failed" in health.detail
    down = EzyVetConnector(EzyVetConfig(base_url="http://127.0.0.1:9", client_id="a", client_secret="b",
                                        partner_id="c", max_attempts=1), CONTEXT)
    assert not (await down.health()).ok
