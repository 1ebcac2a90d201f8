"""parse_associate_rq keeps what a modality proposes on every association: a request whose
variable items were parsed before is served from them, and nothing else is."""

from __future__ import annotations

import pytest

from hub.testing.dicom_raw import CT_IMAGE, EXPLICIT_LE, IMPLICIT_LE, VERIFICATION, associate_rq
from plugins.dicom.ul import AssociateRefused, ProtocolError, parse_associate_rq

CONTEXTS = [(1, VERIFICATION, [IMPLICIT_LE]), (3, CT_IMAGE, [EXPLICIT_LE, IMPLICIT_LE])]


def body(**kw) -> bytes:
    return associate_rq(**kw)[6:]  # without the PDU header, as the association reads it


def test_each_association_keeps_its_own_titles_over_the_same_items():
    first = parse_associate_rq(body(calling="CLINIC1", contexts=CONTEXTS))
    second = parse_associate_rq(body(calling="CLINIC2", contexts=CONTEXTS))
    assert (first.calling_ae, second.calling_ae) == ("CLINIC1", "CLINIC2")
    assert first.contexts == second.contexts == CONTEXTS
    assert first.contexts is not second.contexts  # each request has its own list


def test_a_request_differing_in_one_transfer_syntax_is_parsed_afresh():
    parse_associate_rq(body(contexts=CONTEXTS, max_pdu=16384))
    other = [(1, VERIFICATION, [IMPLICIT_LE]), (3, CT_IMAGE, [IMPLICIT_LE])]
    rq = parse_associate_rq(body(contexts=other, max_pdu=32768))
    assert rq.contexts == other and rq.max_length == 32768


def test_known_items_do_not_excuse_the_fixed_fields():
    parse_associate_rq(body(contexts=CONTEXTS))
    with pytest.raises(AssociateRefused):
        parse_associate_rq(body(contexts=CONTEXTS, protocol_version=2))
    with pytest.raises(AssociateRefused):
        parse_associate_rq(body(contexts=CONTEXTS, application_context="1.2.3"))


def test_a_malformed_request_stays_refused_when_asked_again():
    bad = body(contexts=[(2, VERIFICATION, [IMPLICIT_LE])])  # an even context id
    for _ in range(2):
        with pytest.raises(ProtocolError):
            parse_associate_rq(bad)
