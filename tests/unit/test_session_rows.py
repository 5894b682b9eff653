"""session_rows: what `node sessions` shows of each session, in Calico's words."""
from __future__ import annotations

import attrs

from calico_bgp.resources.bgpsession import BGPPassword, SecretKeyRef
from calico_bgp.routing.session_rows import WIDE, calico_kind, cells, row, rows
from calico_bgp.routing.topology import Session, Skipped


def session(addr="198.18.0.2", **kw):
    base = dict(peer_address=addr, peer_as=64512, local_as=64512, local_address="198.18.0.1", kind="mesh",
                source_address="198.18.0.1", reason="node-to-node mesh")
    return Session(**{**base, **kw})


def test_a_row_has_every_key_and_never_the_password():
    secret = BGPPassword(secret_key_ref=SecretKeyRef("tor-secret", "tor-key"))
    r = row(session(password=secret, ttl_security=2, next_hop_mode="Self", restart_time=30, filters=("f1",),
                    peer_port=1790, passive=True))
    assert tuple(r) == WIDE
    assert r == {"peerIP": "198.18.0.2", "port": 1790, "asNumber": 64512, "localAS": 64512, "family": 4,
                 "kind": "mesh", "rrClient": False, "passive": True, "password": True,
                 "sourceAddress": "198.18.0.1", "ttlSecurity": 2, "nextHopMode": "Self", "gracefulRestartTime": 30,
                 "filters": ["f1"], "reason": "node-to-node mesh"}
    assert "tor-secret" not in repr(r) and "tor-key" not in repr(r)


def test_kinds_in_calicos_words():
    assert calico_kind(session()) == "mesh"
    assert calico_kind(session(kind="fabric", scope="global")) == "global"
    assert calico_kind(session(kind="node-peer", scope="node-specific")) == "node-specific"
    assert calico_kind(session(kind="rr-client", rr_client=True, scope="node-specific")) == "rr client"
    assert calico_kind(session(kind="to-rr", scope="global")) == "route reflector"
    assert calico_kind(session(kind="rr-peer", scope="node-specific")) == "route reflector"


def test_rows_are_ordered_by_family_address_and_port_and_a_skipped_one_says_why():
    a, b = session("198.18.0.10"), session("198.18.0.9")
    v6 = session("2001:db8::2", local_address="2001:db8::1")
    second = attrs.evolve(b, peer_port=1179)
    out = rows([a, v6, b], [Skipped(second, "not run: one per address")])
    assert [(r["peerIP"], r["port"], r["family"]) for r in out] == [
        ("198.18.0.9", 179, 4), ("198.18.0.9", 1179, 4), ("198.18.0.10", 179, 4), ("2001:db8::2", 179, 6)]
    assert out[1]["reason"] == "node-to-node mesh; not run: one per address"


def test_cells_spell_booleans_empties_and_ttl_off():
    r = row(session(source_address=""))
    assert cells(r, ("passive", "sourceAddress", "ttlSecurity", "filters", "port")) == ["no", "-", "off", "-", "179"]
