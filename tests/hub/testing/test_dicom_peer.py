"""The kit's DICOM peer behaves like a PACS, and the kit runs the production pynetdicom code."""

from __future__ import annotations

from pathlib import Path

from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE

import hub.testing.dicom as kit
from hub.testing.dicom import DicomPeer, dataset_bytes, send_files, write_synthetic_series
from plugins.dicom import net, pynetdicom_shim


def test_peer_rejects_a_wrong_called_ae_and_keeps_what_it_accepts(
    dicom_peer: DicomPeer, tmp_path: Path
) -> None:
    paths = write_synthetic_series(tmp_path, 2)
    wrong = send_files("127.0.0.1", dicom_peer.port, paths, called_ae="SOMEONEELSE",
                       calling_ae="SENDER")
    assert [(r.status, r.error) for r in wrong] == [(None, "rejected")] * 2
    assert dicom_peer.wrong_called_aes == ["SOMEONEELSE"] and dicom_peer.received == []

    right = send_files("127.0.0.1", dicom_peer.port, paths, called_ae=dicom_peer.ae_title,
                       calling_ae="SENDER")
    assert [r.status for r in right] == [0, 0]
    assert [data for _, data in dicom_peer.received_datasets()] == [dataset_bytes(p) for p in paths]
    assert {(r.calling_ae, r.called_ae) for r in dicom_peer.received} == {
        ("SENDER", dicom_peer.ae_title)
    }


def test_kit_runs_the_production_workaround_not_a_copy() -> None:
    assert kit.NoDelayAE is pynetdicom_shim.NoDelayAE and kit.NoDelayServer is net.NoDelayServer
    # Installed by plugins.dicom.pynetdicom_shim (the kit imports it), and it does its job: a
    # requestor puts a C-STORE response its reactor took back on the queue send_c_store reads.
    assert Association._serve_request.__module__ == pynetdicom_shim.__name__
    assoc = Association(AE(), "requestor")
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo, rsp.Status = 7, 0x0000
    assoc._serve_request(rsp, 1)
    assert assoc.dimse.msg_queue.get_nowait() == (1, rsp)
