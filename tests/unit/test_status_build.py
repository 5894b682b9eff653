"""The status document is built from a snapshot by a pure function (agent/status.py build): what a
session's state and info say, and the counts, with no agent running."""
from calico_bgp.agent import status as st
from calico_bgp.agent.snapshot import NodeSnapshot, PeerSnapshot, origin_invalid_news


def peer(**kw) -> PeerSnapshot:
    return PeerSnapshot(**{"peer": "198.18.0.1", "kind": "mesh", **kw})


def test_a_session_state_is_the_speakers_and_before_it_says_anything_idle_or_active():
    assert st.session_state(peer(speaker_state="up", tracked=True)) == "Established"
    assert st.session_state(peer(speaker_state="connected", tracked=True)) == "Connect"
    assert st.session_state(peer()) == "Idle"                                    # never reported
    assert st.session_state(peer(tracked=True)) == "Active"                      # reported, speaker silent now
    assert st.session_state(peer(tracked=True, session_error="held idle")) == "Idle"


def test_the_info_says_the_first_known_reason_and_the_md5_hint_while_down():
    down = peer(speaker_state="down", speaker_reason="hold timer expired", tracked=True, last_error="older")
    assert st.session_info(down, "Idle") == "hold timer expired"
    assert st.session_info(peer(session_error="password secret bgp/tor not found", has_password=True,
                                speaker_state="down", speaker_reason="x"), "Idle") == \
        f"password secret bgp/tor not found; {st.MD5_HINT}"
    assert st.session_info(peer(tracked=True, last_error="connection refused"), "Active") == "connection refused"
    assert st.session_info(peer(speaker_state="up", tracked=True, has_password=True, last_error="old"),
                           "Established") == ""


def test_the_document_counts_received_as_accepted_rejected_and_damped_and_keeps_the_rest():
    snap = NodeSnapshot(node="n1", version="v", asn=64512, router_id="198.18.0.2", reflector=True, now=1000.0,
                        started=900.0, peers=(peer(kind="rr-client", accepted=3, rejected=2, damped=1,
                                                   rejected_not_kept=1, flaps=2, uptime=5.0, churn_rate=0.12345,
                                                   tracked=True, speaker_state="up"),),
                        routes_failed=7, failed=(st.FailedRoute("198.19.0.0/26", "build", "no next hop"),),
                        announced=("198.19.1.0/26",), in_grace=True, filter_mode="nft")
    doc = st.build(snap)
    (s,) = doc.sessions
    assert (s.received, s.accepted, s.rejected, s.damped, s.rejected_not_kept) == (6, 3, 2, 1, 1)
    assert s.peer_type == "route reflector client" and s.state == "Established" and s.churn_rate == 0.123
    assert doc.role == "route-reflector" and doc.updated == 1000.0 and doc.started == 900.0
    assert doc.routes_failed == 7 and len(doc.failed) == 1 and doc.in_grace and doc.filter_mode == "nft"
    assert st.decode(st.encode(doc), "test") == doc


def test_lists_in_the_document_stop_at_the_published_maximum():
    many = tuple(st.RejectedRoute("198.18.0.1", f"198.18.{i // 256}.{i % 256}/32", "r")
                 for i in range(st.MAX_PUBLISHED_ROUTES + 5))
    assert len(st.build(NodeSnapshot(node="n1", version="v", rejected=many)).rejected) == st.MAX_PUBLISHED_ROUTES


def test_origin_invalid_paths_make_one_event_when_a_peer_starts_sending_them_and_again_after_it_stopped():
    bad = peer(origin_rejected=2, origin_depreferred=1, origin_first=("198.19.0.0/24", "origin invalid: pool p"))
    news, flagged = origin_invalid_news(frozenset(), (bad,))
    assert [(e.kind, e.peer, e.prefix, e.detail) for e in news] == [
        ("origin_invalid", "198.18.0.1", "198.19.0.0/24", "2 rejected, 1 de-preferred; origin invalid: pool p")]
    assert origin_invalid_news(flagged, (bad,))[0] == []         # still sending: no new event
    news, flagged = origin_invalid_news(flagged, (peer(),))      # stopped
    assert news == [] and flagged == frozenset()
    assert len(origin_invalid_news(flagged, (peer(origin_depreferred=1),))[0]) == 1
