"""The core's caller lookup: which practice a calling AE title, from an address, belongs to."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import delete, select

from hub.db.models import CallingAE, Practice
from hub.imaging.callers import (
    Caller,
    CallerLookup,
    CallerRefused,
    address_allowed,
    identify_caller,
)
from hub.testing.fixtures_dicom import PRACTICE_AE


@pytest.fixture
async def callers_hub(hub_factory, dicom_config_data):
    data = dicom_config_data(dicom={"enabled": False})  # the lookup alone, no receiver
    data["practices"].append({"slug": "vet-two", "name": "Vet Two"})
    return await hub_factory(data)


async def _practice_id(hub, slug: str) -> int:
    async with hub.sessionmaker() as session:
        practice_id = await session.scalar(select(Practice.id).where(Practice.slug == slug))
    assert practice_id is not None
    return practice_id


async def test_a_registered_caller_is_its_practice(callers_hub) -> None:
    caller = await identify_caller(callers_hub, PRACTICE_AE, "10.0.0.5", fallback_practice=None)
    assert caller == Caller(await _practice_id(callers_hub, "vet-one"), PRACTICE_AE, "10.0.0.5")


async def test_an_unregistered_caller_is_refused_or_goes_to_the_fallback(callers_hub) -> None:
    with pytest.raises(CallerRefused, match="calling AE NOBODY not registered, from 10.0.0.5"):
        await identify_caller(callers_hub, "NOBODY", "10.0.0.5", fallback_practice=None)
    caller = await identify_caller(callers_hub, "NOBODY", "10.0.0.5", fallback_practice="vet-two")
    assert caller == Caller(await _practice_id(callers_hub, "vet-two"), "NOBODY", "10.0.0.5")
    with pytest.raises(CallerRefused, match="unknown_caller_practice 'gone' does not exist"):
        await identify_caller(callers_hub, "NOBODY", "10.0.0.5", fallback_practice="gone")


async def test_source_addresses_bind_a_caller_and_a_change_counts_at_once(callers_hub) -> None:
    """No cache: a registration changed elsewhere (the API, another process) applies to the
    very next association."""
    async with callers_hub.transaction() as session:
        row = (
            await session.execute(select(CallingAE).where(CallingAE.ae_title == PRACTICE_AE))
        ).scalar_one()
        row.source_addresses = ["192.0.2.0/28"]
    assert (await identify_caller(callers_hub, PRACTICE_AE, "192.0.2.3", fallback_practice=None)
            ).peer_address == "192.0.2.3"
    with pytest.raises(CallerRefused, match=r"not allowed from 10\.0\.0\.5 \(registered for 192"):
        await identify_caller(callers_hub, PRACTICE_AE, "10.0.0.5", fallback_practice="vet-two")
    async with callers_hub.transaction() as session:
        row = (
            await session.execute(select(CallingAE).where(CallingAE.ae_title == PRACTICE_AE))
        ).scalar_one()
        row.source_addresses = None
    caller = await identify_caller(callers_hub, PRACTICE_AE, "10.0.0.5", fallback_practice=None)
    assert caller.practice_id == await _practice_id(callers_hub, "vet-one")


def test_address_allowed_reads_addresses_networks_and_mapped_ipv4() -> None:
    assert address_allowed("::ffff:10.0.0.5", ["10.0.0.0/24"])
    assert address_allowed("10.0.0.5", ["not an address", " 10.0.0.5 "])
    assert not address_allowed("10.0.1.5", ["10.0.0.0/24"])
    assert not address_allowed("a host name", ["10.0.0.0/24"])


async def test_the_blocking_lookup_is_for_sqlite_only(callers_hub, db_url) -> None:
    """On PostgreSQL associations use the async lookup on the event loop (asyncpg has no
    blocking connection to lend a thread); on an SQLite file, the blocking one."""
    assert CallerLookup(callers_hub).available is db_url.startswith("sqlite")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the blocking lookup is SQLite's
async def test_the_blocking_lookup_answers_as_the_async_one_and_caches_nothing(callers_hub, db_url) -> None:
    """:class:`CallerLookup` (an association's thread, on read connections of its own on
    SQLite) gives the same callers and refusals, and sees a registration changed elsewhere at
    its very next call."""
    lookup = CallerLookup(callers_hub)
    assert lookup.available
    try:
        await asyncio.to_thread(lookup.warm)

        def identify(ae: str, address: str, fallback: str | None) -> Caller:
            return lookup.identify(ae, address, fallback_practice=fallback)

        vet_one, vet_two = await _practice_id(callers_hub, "vet-one"), await _practice_id(
            callers_hub, "vet-two")
        assert await asyncio.to_thread(identify, PRACTICE_AE, "10.0.0.5", None) == Caller(
            vet_one, PRACTICE_AE, "10.0.0.5")
        assert (await asyncio.to_thread(identify, "NOBODY", "10.0.0.5", "vet-two")).practice_id \
            == vet_two
        for ae, fallback, refusal in [
            ("NOBODY", None, "calling AE NOBODY not registered, from 10.0.0.5"),
            ("NOBODY", "gone", "unknown_caller_practice 'gone' does not exist"),
        ]:
            with pytest.raises(CallerRefused, match=refusal):
                await asyncio.to_thread(identify, ae, "10.0.0.5", fallback)
        async with callers_hub.transaction() as session:
            row = (
                await session.execute(select(CallingAE).where(CallingAE.ae_title == PRACTICE_AE))
            ).scalar_one()
            row.source_addresses = ["192.0.2.0/28"]
        with pytest.raises(CallerRefused, match=r"not allowed from 10\.0\.0\.5"):
            await asyncio.to_thread(identify, PRACTICE_AE, "10.0.0.5", "vet-two")
        async with callers_hub.transaction() as session:
            await session.execute(delete(CallingAE).where(CallingAE.ae_title == PRACTICE_AE))
        with pytest.raises(CallerRefused, match="not registered"):  # removed: refused at once
            await asyncio.to_thread(identify, PRACTICE_AE, "192.0.2.3", None)
    finally:
        lookup.close()
