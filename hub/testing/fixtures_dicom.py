"""DICOM fixtures: a peer SCP, pydicom's sample files, a hub with its receiver listening.

- ``dicom_peer``: a started :class:`hub.testing.dicom.DicomPeer` (accepting), stopped after.
- ``dicom_samples``: pydicom's bundled sample files that carry file meta with a standard
  storage SOP class (what a modality could send).
- ``dicom_config_data(**overrides)``: config data for a hub whose receiver listens on port 0,
  with a practice ``vet-one`` (calling AE ``SCANNER1``), a company ``rad-co`` reading CT, MR,
  DX and CR, a company ``sono-co`` reading US, and approved accounts with both.
- ``dicom_hub``: a started hub with that config; ``dicom_port(hub)`` is its receiver's port.
- ``dicom_api``: an API client (see ``api``) for ``dicom_hub``; ``api_for(hub)`` for any hub.
- ``await stored_datasets(hub)``: the data set of every instance the hub stored, by SOP
  Instance UID, read from its file (to compare with what a peer received, byte for byte).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from hub.core import Hub
from hub.testing.dicom import DicomPeer, dataset_bytes, file_meta_of, storage_sop_classes
from hub.testing.fixtures_core import ApiClient, deep_merge
from hub.web.app import create_app

__all__ = [
    "api_for",
    "dicom_api",
    "dicom_config_data",
    "dicom_hub",
    "dicom_peer",
    "dicom_port",
    "dicom_samples",
    "stored_datasets",
]

HUB_AE = "VETHUB"
PRACTICE_AE = "SCANNER1"


@pytest.fixture
def dicom_peer() -> Iterator[DicomPeer]:
    peer = DicomPeer().start()
    try:
        yield peer
    finally:
        peer.stop()


def pydicom_samples() -> list[Path]:
    import pydicom

    folder = Path(pydicom.__file__).parent / "data" / "test_files"
    classes = storage_sop_classes()
    found = []
    for path in sorted(folder.glob("*.dcm")):
        try:
            meta, _ = file_meta_of(path)
        except Exception:
            continue
        if (
            str(meta.get("MediaStorageSOPClassUID", "")) in classes
            and meta.get("TransferSyntaxUID")
            and meta.get("MediaStorageSOPInstanceUID")
        ):
            found.append(path)
    return found


@pytest.fixture(scope="session")
def dicom_samples() -> list[Path]:
    return pydicom_samples()


@pytest.fixture
def dicom_config_data(tmp_path: Path) -> Callable[..., dict[str, Any]]:
    def _data(**overrides: Any) -> dict[str, Any]:
        base: dict[str, Any] = {
            "dicom": {
                "port": 0,
                "ae_title": HUB_AE,
                "storage_root": str(tmp_path / "dicom"),
                "stable_age": 30,
            },
            "companies": [
                {"slug": "rad-co", "name": "Rad Co", "modalities": ["CT", "MR", "DX", "CR"]},
                {"slug": "sono-co", "name": "Sono Co", "modalities": ["US"]},
            ],
            "practices": [
                {"slug": "vet-one", "name": "Vet One", "calling_aes": [PRACTICE_AE]},
            ],
            "accounts": [
                {"practice": "vet-one", "company": "rad-co", "approved_for_access": True},
                {"practice": "vet-one", "company": "sono-co", "approved_for_access": True},
            ],
        }
        return deep_merge(base, overrides)

    return _data


def dicom_port(hub: Hub) -> int:
    from plugins.dicom.plugin import receiver_of

    receiver = receiver_of(hub)
    assert receiver is not None and receiver.port, "the hub's DICOM receiver is not running"
    return receiver.port


async def stored_datasets(hub: Hub) -> dict[str, bytes]:
    """SOP Instance UID -> the encoded data set of its stored file, for every instance."""
    from sqlalchemy import select

    from hub.imaging.models import Instance
    from plugins.dicom.plugin import receiver_of

    receiver = receiver_of(hub)
    assert receiver is not None, "the hub's DICOM receiver is not running"
    async with hub.sessionmaker() as session:
        rows = (await session.execute(select(Instance.sop_instance_uid, Instance.path))).all()
    return {uid: dataset_bytes(receiver.store.root / path) for uid, path in rows}


@pytest_asyncio.fixture
async def dicom_hub(
    hub_factory: Callable[..., Awaitable[Hub]], dicom_config_data: Callable[..., dict[str, Any]]
) -> Hub:
    return await hub_factory(dicom_config_data())


@pytest_asyncio.fixture
async def api_for() -> AsyncIterator[Callable[[Hub], Awaitable[ApiClient]]]:
    """``await api_for(hub)`` -> an :class:`ApiClient` on that hub's app (closed afterwards)."""
    clients: list[TestClient] = []

    async def _make(hub: Hub) -> ApiClient:
        app = create_app(hub, start_hub=False, run_workers=False)
        client = TestClient(TestServer(app, host="127.0.0.1", port=0))
        await client.start_server()
        clients.append(client)
        return ApiClient(client, hub)

    yield _make
    for client in clients:
        await client.close()


@pytest_asyncio.fixture
async def dicom_api(dicom_hub: Hub, api_for: Callable[[Hub], Awaitable[ApiClient]]) -> ApiClient:
    return await api_for(dicom_hub)
