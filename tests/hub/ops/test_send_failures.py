"""A message the SMTP server refuses for good leaves a trace: the communication failed, a
``messaging.send_failed`` event and a count in ``vethub_send_failures_total``."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from hub.db.models import HubEvent
from hub.messaging.models import Communication
from hub.messaging.outbound import queue_email

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def failures(reason: str) -> float:
    return REGISTRY.get_sample_value("vethub_send_failures_total", {"channel": "email", "reason": reason}) or 0.0


async def test_refused_message_is_counted_and_listed(hub_factory, smtp_sink, db_url: str) -> None:
    smtp_sink.data_reply = "554 5.6.0 message content rejected"
    hub = await hub_factory({"email": {"backend": "smtp", "host": "127.0.0.1", "port": smtp_sink.port,
                                       "tls": "none", "from_address": "hub@vet.example"}})
    before = failures("rejected")
    async with hub.transaction() as s:
        comm = await queue_email(s, hub, to="desk@parkside.example", template="message",
                                 context={"subject": "Hi", "body": "Hello"}, category="account")
    await hub.jobs.run_until_idle()
    async with hub.sessionmaker() as s:
        assert (await s.get(Communication, comm.id)).status == "failed"
        [event] = (await s.execute(select(HubEvent).where(HubEvent.kind == "messaging.send_failed"))).scalars()
    assert event.data["communication_id"] == comm.id and event.data["reason"] == "rejected"
    assert failures("rejected") == before + 1
