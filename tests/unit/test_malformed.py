"""RFC 7606 in the intake, from the JSON ExaBGP itself writes for malformed UPDATEs (decoded from
raw bytes by its own decoder, with our patches: tests/unit/exabgp_decode.py).

Each case: the peer had a good path for P; the malformed UPDATE announces P and Q. Treat-as-withdraw
leaves neither in the RIB (P's old path is withdrawn, RFC 7606 2); a kept one replaces P's path;
another peer's route is untouched; the session is not reset (nothing raises)."""
from __future__ import annotations


import pytest

from calico_bgp.routing import malformed, martians
from calico_bgp.routing.prefix import Prefix
from calico_bgp.routing.damping import Dampener, DampingParams
from calico_bgp.routing.intake import UpdateIntake
from calico_bgp.routing.attributes import PathAttributes
from calico_bgp.routing.path import LocalSpeaker, Peer
from calico_bgp.routing.rib import Rib
from calico_bgp.speaker.events import Malformation, Update
from calico_bgp.speaker.exabgp_run import attribute_errors
from calico_bgp.speaker.parse import parse_line
from tests.unit.exabgp_decode import (
    LOCAL_AS,
    PEER,
    PEER_AS,
    as_path,
    attribute,
    decode,
    next_hop,
    origin,
    sequence,
    update,
)

P, Q, OTHER = "198.19.5.0/24", "198.19.6.0/24", "198.19.9.0/24"
NH = next_hop(PEER)
EBGP = Peer(PEER, PEER_AS, PEER, ibgp=False)
IBGP = Peer(PEER, LOCAL_AS, PEER, ibgp=True)
OTHER_PEER = Peer("198.18.0.3", 65003, "198.18.0.3", ibgp=False)

CASES = {  # name: (attributes, reasons, treated as withdrawn)
    "missing NEXT_HOP": ([origin(), sequence(PEER_AS)], {"missing-next-hop"}, True),
    "missing ORIGIN": ([sequence(PEER_AS), NH], {"missing-origin"}, True),
    "missing AS_PATH": ([origin(), NH], {"missing-as-path"}, True),
    "ORIGIN 5": ([origin(5), sequence(PEER_AS), NH], {"invalid-origin"}, True),
    "ORIGIN of two octets": ([attribute(0x40, 1, b"\0\0"), sequence(PEER_AS), NH], {"invalid-origin"}, True),
    "unknown well-known, transitive": ([origin(), sequence(PEER_AS), NH, attribute(0x40, 99, b"ab")],
                                       {"unrecognized-well-known"}, True),
    "unknown well-known, no flags": ([origin(), sequence(PEER_AS), NH, attribute(0x00, 99, b"ab")],
                                     {"unrecognized-well-known"}, True),
    "MED of three octets (ExaBGP's own)": ([origin(), sequence(PEER_AS), NH, attribute(0x80, 4, b"\0\0\1")],
                                           {"malformed-attribute"}, True),
    "first AS not the peer's": ([origin(), sequence(65099, PEER_AS), NH], {"first-as-mismatch"}, True),
    "empty AS_PATH from eBGP": ([origin(), attribute(0x40, 2, b""), NH], {"empty-as-path"}, True),
    "AS 0 in AS_PATH": ([origin(), sequence(PEER_AS, 0, 7), NH], {"as-zero"}, True),
    "AS 0 in an AS_SET": ([origin(), as_path((2, (PEER_AS,)), (1, (0,))), NH], {"as-zero"}, True),
    "duplicate ORIGIN": ([origin(0), origin(2), sequence(PEER_AS), NH], {"duplicate-attribute"}, False),
    "duplicate NEXT_HOP": ([origin(), sequence(PEER_AS), NH, next_hop("127.0.0.1")], {"duplicate-attribute"}, False),
    "unknown optional transitive": ([origin(), sequence(PEER_AS), NH, attribute(0xC0, 99, b"ab")], set(), False),
}


def _rib() -> Rib:
    return Rib(LocalSpeaker(LOCAL_AS, "198.18.0.2"), import_policy=martians.guarded(None))


def _apply(intake: UpdateIntake, rib: Rib, peer: Peer, line: str):  # type: ignore[no-untyped-def]
    (ev,) = parse_line(line)
    assert isinstance(ev, Update)
    return intake.apply(ev, peer, rib, Dampener(DampingParams(), enabled=False), 0.0)


@pytest.fixture(scope="module")
def lines() -> dict[str, str]:
    good = update([origin(), sequence(PEER_AS), NH], (P,))
    bodies = {"good": good, **{name: update(a, (P, Q)) for name, (a, _, _) in CASES.items()}}
    return dict(zip(bodies, decode(*bodies.values())))


@pytest.mark.parametrize("name", list(CASES))
def test_a_malformed_update_is_withdrawn_or_kept_as_rfc_7606_says(lines, name):
    _, reasons, withdrawn = CASES[name]
    rib, intake = _rib(), UpdateIntake()
    _apply(intake, rib, EBGP, lines["good"])
    rib.update(OTHER_PEER, {Prefix.of(OTHER): PathAttributes("198.18.0.3", as_path=(65003,))})
    p, q = Prefix.of(P), Prefix.of(Q)
    assert rib.selection(p) is not None

    got = _apply(intake, rib, EBGP, lines[name])
    assert {m.reason for m in got.malformed} == reasons
    assert all(m.detail for m in got.malformed)
    if withdrawn:
        assert rib.selection(p) is None and rib.selection(q) is None, "treat-as-withdraw: the old path goes too"
        assert got.treated_as_withdrawn == (0 if "malformed-attribute" in reasons else 2)
        assert not got.announced and not rib.rejected(PEER)  # withdrawn, not kept as rejected
    else:
        assert rib.selection(p).best.attrs.next_hop == PEER and rib.selection(q) is not None
        assert got.treated_as_withdrawn == 0
    assert rib.selection(Prefix.of(OTHER)) is not None  # another peer's route is untouched


def test_a_duplicate_keeps_the_first_occurrence(lines):
    rib = _rib()
    _apply(UpdateIntake(), rib, EBGP, lines["duplicate ORIGIN"])
    assert rib.selection(Prefix.of(P)).best.attrs.origin == "igp"  # origin(0) came first, origin(2) second


def test_an_empty_as_path_and_another_first_as_are_fine_from_an_ibgp_peer(lines):
    for name in ("empty AS_PATH from eBGP", "first AS not the peer's"):
        rib = _rib()
        got = _apply(UpdateIntake(), rib, IBGP, lines[name])
        assert not got.malformed and rib.selection(Prefix.of(Q)) is not None


def test_a_missing_as_path_is_malformed_from_an_ibgp_peer_too(lines):
    got = _apply(UpdateIntake(), _rib(), IBGP, lines["missing AS_PATH"])
    assert [m.reason for m in got.malformed] == ["missing-as-path"] and got.treated_as_withdrawn == 2


def test_withdrawals_in_a_malformed_update_are_still_applied():
    rib, intake = _rib(), UpdateIntake()
    good, bad = decode(update([origin(), sequence(PEER_AS), NH], (OTHER,)),
                       update([origin(5), sequence(PEER_AS), NH], (P,), withdraw=(OTHER,)))
    _apply(intake, rib, EBGP, good)
    got = _apply(intake, rib, EBGP, bad)
    assert [m.reason for m in got.malformed] == ["invalid-origin"]
    assert len(rib) == 0


def test_our_as_inside_an_as_set_is_a_loop_whatever_the_filters_say():
    (line,) = decode(update([origin(), as_path((2, (PEER_AS,)), (1, (LOCAL_AS, 7))), NH], (P,)))
    rib = _rib()
    got = _apply(UpdateIntake(), rib, EBGP, line)
    assert not got.malformed
    assert [(str(r.prefix), r.reason) for r in rib.rejected(PEER)] == [(P, "as-path loop")]


def test_an_as_set_counts_as_one_as_in_the_decision():
    """RFC 4271 9.1.2.2 (a): a path of one AS and a set of three is as long as a path of two ASes."""
    from calico_bgp.routing.decision import select
    from calico_bgp.routing.path import Path
    prefix = Prefix.of(P)
    a = Path(prefix, EBGP, PathAttributes(PEER, as_path=(PEER_AS,), as_set=(1, 2, 3)))
    b = Path(prefix, OTHER_PEER, PathAttributes("198.18.0.3", as_path=(65003, 65004, 65005)))
    assert select([a, b], LOCAL_AS).best is a


def test_the_header_walk_finds_duplicates_unknown_well_known_and_a_missing_as_path():
    known = {1, 2, 3, 4, 5}
    assert attribute_errors(b"", known) == {}  # a withdraw-only UPDATE: nothing missing
    assert attribute_errors(origin() + sequence(1) + NH, known) == {}
    assert attribute_errors(origin() + origin() + NH + attribute(0x00, 99, b"") + attribute(0x80, 98, b"x"), known) == {
        "duplicate": [1], "unrecognized-well-known": [99], "missing": [2]}
    long = attribute(0x40, 2, b"\x02\x01" + b"\0\0\0\1") + attribute(0xC0, 97, b"y" * 300)  # extended length
    assert attribute_errors(long, known) == {}
    assert attribute_errors(b"\x40\x01", known) == {}  # a truncated header: ExaBGP's to refuse
    assert attribute_errors(attribute(0x80, 15, b"\0\2\1"), known) == {}  # MP_UNREACH_NLRI alone: withdrawals


def test_first_as():
    assert malformed.first_as(EBGP, (PEER_AS, 7), ()) is None
    assert malformed.first_as(EBGP, (7, PEER_AS), ()).reason == "first-as-mismatch"
    assert malformed.first_as(EBGP, (), ()).reason == "empty-as-path"
    assert malformed.first_as(EBGP, (), (PEER_AS,)).reason == "first-as-mismatch"
    assert malformed.first_as(IBGP, (), ()) is None
    assert malformed.as_path_error(IBGP, (LOCAL_AS, 0), ()).reason == "as-zero"  # RFC 7607: from any peer
    assert malformed.as_path_error(EBGP, (PEER_AS,), ()) is None


def test_every_reason_parse_can_give_has_an_action():
    assert set(malformed.REASONS) >= {"missing-origin", "missing-as-path", "missing-next-hop", "invalid-origin",
                                      "unrecognized-well-known", "duplicate-attribute", "attribute-discarded",
                                      "malformed-attribute", "first-as-mismatch", "empty-as-path", "as-zero"}
    assert malformed.withdraws([Malformation("missing-origin")])
    assert not malformed.withdraws([Malformation("duplicate-attribute"), Malformation("malformed-attribute")])
    assert malformed.action("something new") == malformed.TREAT_AS_WITHDRAW


def test_a_reason_is_reported_once_per_peer_and_session():
    r = malformed.MalformedReports()
    assert r.first("a", "missing-origin") and not r.first("a", "missing-origin")
    assert r.first("a", "invalid-origin") and r.first("b", "missing-origin")
    r.forget("a")
    assert r.first("a", "missing-origin") and not r.first("b", "missing-origin")


def test_withdrawals_and_end_of_rib_decode_as_before_the_patch():
    """The marker never lands on an UPDATE that only withdraws: ExaBGP tells an End-of-RIB by its
    empty attribute set, and an MP_UNREACH_NLRI alone needs no AS_PATH."""
    mp_unreach = attribute(0x80, 15, b"\x00\x02\x01" + b"\x30\x20\x01\x0d\xb8\x00\x05")  # 2001:db8:5::/48
    eor_v4, withdraw, withdraw_v6, eor_v6 = decode(b"\0\0\0\0", update([], withdraw=(P,)), update([mp_unreach]),
                                                   update([attribute(0x80, 15, b"\x00\x02\x01")]))
    assert "rfc7606" not in eor_v4 + withdraw + withdraw_v6 + eor_v6
    assert [type(e).__name__ for e in parse_line(eor_v4) + parse_line(eor_v6)] == ["EndOfRib", "EndOfRib"]
    (w,) = parse_line(withdraw)
    (w6,) = parse_line(withdraw_v6)
    assert w.withdrawn == (P,) and w6.withdrawn == ("2001:db8:5::/48",) and not w.malformed and not w6.malformed


def test_an_ipv6_update_needs_no_next_hop_attribute_but_the_rest_is_checked_alike():
    """RFC 7606 3(d) and RFC 4760: NLRI in MP_REACH_NLRI carry their next hop there."""
    nh = bytes.fromhex("20010db8000000000000000000000001")
    mp_reach = attribute(0x80, 14, b"\x00\x02\x01\x10" + nh + b"\x00" + b"\x30\x20\x01\x0d\xb8\x00\x05")
    good, no_origin = decode(update([origin(), sequence(PEER_AS), mp_reach]), update([sequence(PEER_AS), mp_reach]))
    rib = _rib()
    assert not _apply(UpdateIntake(), rib, EBGP, good).malformed
    assert rib.selection(Prefix.of("2001:db8:5::/48")).next_hops == ("2001:db8::1",)
    got = _apply(UpdateIntake(), rib, EBGP, no_origin)
    assert [m.reason for m in got.malformed] == ["missing-origin"] and len(rib) == 0


def test_the_agent_counts_every_malformed_update_and_records_one_event_per_peer_and_reason(lines):
    """SessionEvents.report_malformed over 50 broken UPDATEs from one peer: the metric counts 50, the
    event log holds one event (and one more after the session ended and came back)."""
    from types import SimpleNamespace

    from calico_bgp.agent import sampling
    from calico_bgp.agent.session_events import SessionEvents
    from calico_bgp.agent.snapshot import metrics_sample
    from calico_bgp.agent.state import AgentState
    from calico_bgp.routing.topology import Session
    from calico_bgp.telemetry.collector import PeerCounts
    from calico_bgp.telemetry.metrics import Metrics

    events: list[tuple[str, str, str]] = []
    state = AgentState(sessions={PEER: Session(peer_address=PEER, peer_as=PEER_AS, local_as=64512,
                                               local_address="198.18.0.2", kind="fabric")},
                       counts={PEER: PeerCounts()})
    agent = SimpleNamespace(state=state, events=SimpleNamespace(emit=lambda kind, peer="", prefix="", detail="":
                                                                events.append((kind, peer, detail))))
    metrics = Metrics()
    metrics.watch(lambda: metrics_sample(sampling.peers(state, {}, 0.0)))
    rib, intake = _rib(), UpdateIntake()
    for _ in range(50):
        SessionEvents.report_malformed(agent, PEER, _apply(intake, rib, EBGP, lines["missing NEXT_HOP"]))  # type: ignore[arg-type]
    SessionEvents.report_malformed(agent, PEER, _apply(intake, rib, EBGP, lines["ORIGIN 5"]))  # type: ignore[arg-type]
    assert metrics.registry.get_sample_value(
        "calico_bgp_peer_malformed_updates_total", {"peer": PEER, "reason": "missing-next-hop"}) == 50
    assert [(k, p, d.split(";")[0]) for k, p, d in events] == [
        ("malformed_update", PEER, "missing-next-hop: NLRI without NEXT_HOP"),
        ("malformed_update", PEER, "invalid-origin: ORIGIN invalid")]
    assert "treat-as-withdraw (2 prefixes)" in events[0][2]
    state.malformed_reports.forget(PEER)  # what a session going down does
    SessionEvents.report_malformed(agent, PEER, _apply(intake, rib, EBGP, lines["missing NEXT_HOP"]))  # type: ignore[arg-type]
    assert len(events) == 3


def test_what_cannot_be_parsed_at_all_is_exabgps_session_reset():
    """RFC 7606 5.3 and 3(j): NLRI that cannot be parsed, a malformed MP_REACH_NLRI, or one sent twice
    leave nothing to withdraw: ExaBGP answers with a NOTIFICATION (UPDATE Message Error) and resets
    the session; nothing of it reaches the agent."""
    mp = attribute(0x80, 14, b"\x00\x02\x01\x10" + bytes(16) + b"\x00" + b"\x30\x20\x01\x0d\xb8\x00\x05")
    bad_mp = attribute(0x80, 14, b"\x00\x02\x01\x10" + bytes(16) + b"\x00" + b"\x90\x20\x01")
    out = decode(update([origin(), sequence(PEER_AS), NH]) + bytes([33, 198, 19, 5, 0, 0]),
                 update([origin(), sequence(PEER_AS), bad_mp]),
                 update([origin(), sequence(PEER_AS), mp, mp]))
    for line in out:
        assert line.startswith('{"raises": "Notify: UPDATE message error'), line


def test_ibgp_only_attributes_from_an_ebgp_peer_are_discarded_and_cannot_win_the_tie_break():
    """RFC 7606 7.5, 7.9, 7.10: LOCAL_PREF, ORIGINATOR_ID and CLUSTER_LIST from an external peer are
    discarded (the route is kept). Kept, an ORIGINATOR_ID of 0.0.0.1 would beat every router id."""
    extra = [attribute(0x40, 5, b"\0\0\x03\xe8"), attribute(0x80, 9, bytes([0, 0, 0, 1])),
             attribute(0x80, 10, bytes([198, 18, 0, 9]))]
    (line,) = decode(update([origin(), sequence(PEER_AS), NH, *extra], (P,)))
    rib, intake = _rib(), UpdateIntake()
    got = _apply(intake, rib, EBGP, line)
    assert [(m.reason, m.detail) for m in got.malformed] == [
        ("attribute-discarded", "LOCAL_PREF, ORIGINATOR_ID, CLUSTER_LIST from an eBGP peer")]
    a = rib.selection(Prefix.of(P)).best.attrs
    assert (a.local_pref, a.originator_id, a.cluster_list) == (None, None, ())
    # the same path from an eBGP peer with router id 0.0.0.2 wins the router-id step: 0.0.0.1 was dropped
    other = Peer("198.18.0.3", PEER_AS, "0.0.0.2", ibgp=False)
    rib.update(other, {Prefix.of(P): PathAttributes("198.18.0.3", as_path=(PEER_AS,))})
    sel = rib.selection(Prefix.of(P))
    assert sel.best.peer.address == "198.18.0.3" and sel.reason == "router-id"
    rib2 = _rib()
    assert not _apply(UpdateIntake(), rib2, IBGP, line).malformed  # from iBGP they mean what they say
    assert rib2.selection(Prefix.of(P)).best.attrs.originator_id == "0.0.0.1"
