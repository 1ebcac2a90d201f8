"""Forwarding against a peer that stalls on one instance: each answer is recorded as it
arrives, the stall costs one timeout, a peer gone is found out quickly, and the next attempt
sends the instances never tried before the one that failed."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

from pynetdicom import AE, evt
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import Verification
from sqlalchemy import select

from hub.db.models import Practice
from hub.imaging.models import CaseInstanceForward, Instance, Study
from hub.testing.dicom import file_meta_of, send_files, write_synthetic_series
from hub.testing.fixtures_dicom import HUB_AE, PRACTICE_AE, dicom_port


@dataclass
class StallingPeer:
    """A Storage SCP that never answers ``stall_uid`` (until :meth:`stop`), and rejects
    associations while ``refusing``."""

    stall_uid: str = ""
    refusing: bool = False
    received: list[str] = field(default_factory=list)
    stalled: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    def start(self) -> StallingPeer:
        ae = AE(ae_title="STALLER")
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
        ae.add_supported_context(Verification)
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_REQUESTED, self._on_requested)]
        self.server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
        self.ae = ae
        self.port = self.server.server_address[1]
        return self

    def _on_requested(self, event) -> None:
        if self.refusing:
            event.assoc.acse.send_reject(0x02, 0x01, 0x01)
            event.assoc.kill()

    def _on_store(self, event) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        if uid == self.stall_uid and not self.release.is_set():
            self.stalled.set()
            self.release.wait(60)  # the association's thread hangs: no response goes out
            return 0xA700
        self.received.append(uid)
        return 0x0000

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.ae.shutdown()


async def _forwards(hub) -> dict[str, tuple[str, int]]:
    async with hub.sessionmaker() as s:
        rows = await s.execute(
            select(Instance.sop_instance_uid, CaseInstanceForward)
            .join(CaseInstanceForward, CaseInstanceForward.instance_id == Instance.id)
        )
        return {uid: (f.status, f.attempts) for uid, f in rows}


async def test_a_peer_stalling_on_one_instance(
    hub_factory, dicom_config_data, frozen_clock, api_for, tmp_path
):
    peer = StallingPeer().start()
    try:
        data = dicom_config_data(dicom={"stable_age": 86400, "forward_timeout": 2})
        data["companies"][0]["destination"] = {
            "host": "127.0.0.1", "port": peer.port, "ae_title": "STALLER"
        }
        hub = await hub_factory(data, clock=frozen_clock)
        paths = write_synthetic_series(tmp_path / "s", 5, modality="DX")
        results = await asyncio.to_thread(
            send_files, "127.0.0.1", dicom_port(hub), paths, called_ae=HUB_AE,
            calling_ae=PRACTICE_AE,
        )
        assert {r.status for r in results} == {0}
        async with hub.sessionmaker() as s:
            by_id = list((await s.execute(
                select(Instance.sop_instance_uid).order_by(Instance.id)
            )).scalars())
        assert sorted(by_id) == sorted(str(file_meta_of(p)[0].MediaStorageSOPInstanceUID)
                                       for p in paths)
        first, stall, *rest = by_id  # sent in this order: by instance id
        peer.stall_uid = stall

        api = await api_for(hub)
        async with hub.sessionmaker() as s:
            practice_id = await s.scalar(select(Practice.id).where(Practice.slug == "vet-one"))
            study_id = await s.scalar(select(Study.id))
        staff = await api.as_role("practice_staff", practice_id=practice_id)
        async with staff.post("/api/cases", json={"study_id": study_id, "question": "?", "allow_incomplete": True}) as r:
            assert r.status == 201, await r.text()

        # Attempt 1: the first is answered and recorded while the peer sits on the second.
        attempt = asyncio.create_task(hub.jobs.run_until_idle())
        assert await asyncio.to_thread(peer.stalled.wait, 30)
        deadline = time.monotonic() + 20
        while (await _forwards(hub)).get(first) != ("success", 1):
            assert time.monotonic() < deadline, await _forwards(hub)
            await asyncio.sleep(0.05)
        assert (await _forwards(hub))[stall] == ("pending", 0)  # still being waited for
        # The peer then goes away for the rest of the attempt: the stall costs one
        # forward_timeout, the new association is refused, the others stay never tried.
        peer.refusing = True
        assert await asyncio.wait_for(attempt, 60) == 3  # the forward, two status announcements
        after = await _forwards(hub)
        assert after[first] == ("success", 1) and after[stall] == ("failed", 1)
        assert {after[uid] for uid in rest} == {("pending", 0)}

        # Attempt 2: the instances never tried go first, the one that failed last.
        peer.refusing = False
        peer.release.set()
        frozen_clock.advance(seconds=600)
        assert await hub.jobs.run_until_idle() == 2  # the forward and the "delivered" announcement
        images = {first, stall, *rest}
        assert [u for u in peer.received if u in images] == [first, *rest, stall]  # + the request
        assert set((await _forwards(hub)).values()) == {("success", 1), ("success", 2)}
    finally:
        await asyncio.to_thread(peer.stop)
