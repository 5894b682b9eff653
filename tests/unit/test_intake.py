"""calico_bgp.routing.intake: one UPDATE into the RIB (prefix parsing: test_prefix.py)."""
from __future__ import annotations

import ipaddress

import attrs
import pytest

from calico_bgp.routing.damping import Dampener, DampingParams
from calico_bgp.routing.intake import UpdateIntake
from calico_bgp.routing.attributes import PathAttributes
from calico_bgp.routing.path import LocalSpeaker, Peer
from calico_bgp.routing.prefix import Prefix
from calico_bgp.routing.rib import Rib
from calico_bgp.speaker.events import Update


def test_an_update_reaches_the_rib_with_damping_off_as_update_would():
    rib = Rib(LocalSpeaker(64512, "198.18.0.2"))
    peer = Peer("198.18.0.1", 65001, "198.18.0.1", ibgp=False)
    damp: Dampener[PathAttributes] = Dampener(DampingParams(), enabled=False)
    a = PathAttributes(next_hop="198.18.0.1", origin="igp", as_path=(65001,))
    got = UpdateIntake().apply(Update("198.18.0.1", "ipv4 unicast", {"198.18.64.0/24": a, "198.18.65.1/24": a,
                                                                      "198.18.66.0/24": PathAttributes()}),
                               peer, rib, damp, 0.0)
    p = Prefix.of("198.18.64.0/24")
    assert got.changed == {p} and list(got.announced) == [p]
    assert got.bad == [("198.18.65.1/24", "198.18.0.1"), ("198.18.66.0/24", None)]
    assert rib.selection(p).next_hops == ("198.18.0.1",)
    assert damp._latest == {}  # not fed while off
    got = UpdateIntake().apply(Update("198.18.0.1", "ipv4 unicast", {}, ("198.18.64.0/24",)), peer, rib, damp, 1.0)
    assert got.changed == {p} and rib.selection(p) is None


def test_damping_turned_on_later_penalises_a_path_learned_while_it_was_off():
    """Off, the dampener is not fed; turned on, it takes the RIB's paths (accepted and rejected), so
    the first withdraw is a flap, and a changed attribute half of one, as if it had always been on."""
    rib = Rib(LocalSpeaker(64512, "198.18.0.2"), import_policy=lambda peer, prefix, a: "refused" if a.med == 7 else None)
    peer = Peer("198.18.0.1", 65001, "198.18.0.1", ibgp=False)
    intake = UpdateIntake()
    off: Dampener[PathAttributes] = Dampener(DampingParams(), enabled=False)
    a = PathAttributes(next_hop="198.18.0.1", origin="igp", as_path=(65001,))
    intake.apply(Update("198.18.0.1", "ipv4 unicast", {"198.18.64.0/24": a, "198.18.65.0/24": attrs.evolve(a, med=7)}),
                 peer, rib, off, 0.0)
    on, released = off.reconfigured(DampingParams(), True, 1.0, rib.received())
    assert not released.announce
    p, q = Prefix.of("198.18.64.0/24"), Prefix.of("198.18.65.0/24")
    assert set(on._latest) == {("198.18.0.1", p), ("198.18.0.1", q)}
    intake.apply(Update("198.18.0.1", "ipv4 unicast", {}, ("198.18.64.0/24",)), peer, rib, on, 2.0)
    intake.apply(Update("198.18.0.1", "ipv4 unicast", {"198.18.65.0/24": attrs.evolve(a, med=8)}), peer, rib, on, 2.0)
    assert on.state(("198.18.0.1", p), 2.0).flaps == 1
    assert on.state(("198.18.0.1", p), 2.0).penalty == pytest.approx(DampingParams().withdraw_penalty)
    assert on.state(("198.18.0.1", q), 2.0).penalty == pytest.approx(DampingParams().attribute_penalty)


def test_trim_forgets_the_parsed_prefixes_the_rib_no_longer_holds():
    """It used to be: 200k rejected routes announced then withdrawn left their parsed prefixes cached (up to
    2^18); the agent trims the cache to what the RIB holds once UPDATEs went quiet."""
    rib = Rib(LocalSpeaker(64512, "198.18.0.1"), lambda _p, prefix, _a: None if prefix.version == 4 else "outside",
              max_rejected=10)
    peer = Peer("198.18.0.2", 65001, "198.18.0.2", ibgp=False)
    intake, damp = UpdateIntake(), Dampener(DampingParams(), enabled=False)
    a = PathAttributes(next_hop="198.18.0.2", as_path=(65001,))
    accepted = [f"198.18.64.{i}/32" for i in range(50)]
    rejected = [f"2001:db8:ff::{i:x}/128" for i in range(100)]
    intake.apply(Update(peer=peer.address, family="ipv4 unicast", announced=dict.fromkeys(accepted, a), withdrawn=()),
                 peer, rib, damp, 0.0)
    intake.apply(Update(peer=peer.address, family="ipv6 unicast",
                        announced=dict.fromkeys(rejected, attrs.evolve(a, next_hop="2001:db8::2")), withdrawn=()),
                 peer, rib, damp, 0.0)
    assert intake.cached == 150 and rib.held() == 60
    # the rejected paths not kept are forgotten; the accepted and the ten kept stay parsed
    assert intake.trim(rib.holds) == 90 and intake.cached == 60
    intake.apply(Update(peer=peer.address, family="ipv4 unicast", announced={}, withdrawn=tuple(accepted)),
                 peer, rib, damp, 0.0)
    assert intake.trim(rib.holds) == 50 and intake.cached == 10
    assert intake.trim(rib.holds) == 0


def test_the_rib_holds_one_attributes_object_per_update_the_parsed_one_when_nothing_changes():
    """The prefixes of one UPDATE share one attributes value in the RIB (they are compared and
    hashed by identity first): the parsed value itself when its next hop needs no resolving (IPv4),
    one resolved value for all when it does (a link-local next hop scoped to the session's link)."""
    from calico_bgp.routing.nexthop import SessionLink
    rib = Rib(LocalSpeaker(64512, "198.18.0.1"))
    damp, intake = Dampener(DampingParams(), enabled=False), UpdateIntake()
    v4 = Peer("198.18.0.2", 65001, "198.18.0.2", ibgp=False)
    a = PathAttributes(next_hop="198.18.0.2", as_path=(65001,))
    got = intake.apply(Update(v4.address, "ipv4 unicast", {f"198.18.64.{i}/32": a for i in range(3)}), v4, rib, damp, 0.0)
    assert all(rib.paths(p)[0].attrs is a for p in got.announced)
    link = SessionLink("eth0", (ipaddress.ip_network("2001:db8:0:1::/64"),))
    v6 = Peer("2001:db8:0:1::2", 65001, "198.18.0.3", ibgp=False, link=link)
    b = PathAttributes(next_hop="fe80::2", as_path=(65001,))
    got = intake.apply(Update(v6.address, "ipv6 unicast", {f"2001:db8:{i}::/48": b for i in range(3)}), v6, rib, damp, 0.0)
    held = {id(rib.paths(p)[0].attrs) for p in got.announced}
    assert len(held) == 1 and rib.paths(Prefix.of("2001:db8:1::/48"))[0].attrs.next_hop == "fe80::2%eth0"
