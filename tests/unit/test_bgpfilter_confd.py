"""Calico's confd BGPFilter scenarios (../shared/calico-confd, from projectcalico/calico confd/tests)
through our policy: every scenario's filters apply with no warning, and routes get the verdicts and
attributes the golden BIRD functions give them (confd/tests/compiled_templates/bgpfilter/<scenario>/
bird.cfg, the version whose priority is `bgp_local_pref = 2147483647 - priority`). Each expectation
below names the golden line it follows."""
from __future__ import annotations

from pathlib import Path

import pytest

from calico_bgp.resources.documents import load_documents
from calico_bgp.resources.pending import warning
from calico_bgp.routing.attributes import PathAttributes
from calico_bgp.routing.bgpfilter import export_routes, import_policy
from calico_bgp.routing.nexthop import SessionLink
from calico_bgp.routing.path import Peer
from calico_bgp.routing.prefix import Prefix

_REPO = Path(__file__).resolve().parents[2]
# ../shared beside the checkout (a worktree under wt/ finds it one level further up)
SHARED = next((d / "shared" / "calico-confd" for d in _REPO.parents if (d / "shared" / "calico-confd").is_dir()),
              _REPO.parent / "shared" / "calico-confd")
pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason=f"Calico's confd scenarios are not at {SHARED}")

NET = Prefix.of
# Calico's own scenario addresses (its filters' CIDRs are 10/8, 172.16/12, 192.168/16), kept so each
# verdict can be checked against its golden BIRD line; values in memory only, never on any interface
IBGP = Peer("10.192.0.3", 64512, "10.192.0.3", ibgp=True, link=SessionLink("eth0"))
EBGP = Peer("10.192.0.5", 65001, "10.192.0.5", ibgp=False)
OWN = [NET("10.0.1.0/26"), NET("172.16.1.0/26"), NET("192.168.1.0/26")]


def _filter(scenario: str):
    docs = load_documents((SHARED / f"bgpfilter__{scenario}.input.yaml").read_text())
    (f,) = [d for d in docs if d.kind == "BGPFilter"]
    return f


def _import(scenario: str):
    f = _filter(scenario)
    return import_policy([], lambda peer: [f])  # no pool: only the filter accepts


def _route(next_hop="10.192.0.3", **kw):
    return PathAttributes(next_hop, **kw)


def test_every_bgpfilter_scenario_applies_with_no_warning():
    inputs = sorted(SHARED.glob("bgpfilter__*.input.yaml"))
    assert len(inputs) >= 20
    for path in inputs:
        for d in load_documents(path.read_text()):
            assert warning(d) is None or d.kind != "BGPFilter", (path.name, warning(d))


def test_communities_and_operations():
    """importFilterV4: `if (((65000, 100) ~ bgp_community)) then { bgp_local_pref = 2147483391; accept; }
    reject;`; exportFilterV4: `if (((65000, 42) ~ bgp_community)) then { ... }  reject;`."""
    p = _import("communities_and_operations")
    got = p(EBGP, NET("198.51.100.0/24"), _route(communities=((65000, 100),)))
    assert got.local_pref == 2147483391
    assert p(EBGP, NET("198.51.100.0/24"), _route()) == "rejected by filter 'test-filter-communities-ops' importV4[1]"
    assert export_routes(OWN, [_filter("communities_and_operations")], ibgp=True) == {}  # ours carry none


def test_as_path_and_priority():
    """importFilterV6: `if ((bgp_path ~ [= 65000 * =])) then { bgp_local_pref = 2147483547; accept; }
    accept;`; exportFilterV6: `if ((defined(bgp_local_pref)&&(bgp_local_pref = 2147483547))) ...
    reject;` (v4 the same with a second, shadowed, [= 65000 65001 * =] rule)."""
    p = _import("as_path_and_priority")
    assert p(EBGP, NET("198.51.100.0/24"), _route(as_path=(65000, 65001))).local_pref == 2147483547  # first rule
    assert p(EBGP, NET("2001:db8::/64"), _route("2001:db8:9::1", as_path=(65000,))).local_pref == 2147483547
    assert p(EBGP, NET("198.51.100.0/24"), _route(as_path=(65001,))) is None  # accept as sent
    assert export_routes(OWN, [_filter("as_path_and_priority")], ibgp=True) == {}  # ours: priority 1024


def test_peer_type():
    """importFilterV4(bool is_same_as): `if (is_same_as) then { if (((65000, 100) ~ bgp_community))
    then { bgp_local_pref = 2147483547; accept; } }  accept;`; exportFilterV4: `if (!is_same_as) then
    { if ((net ~ 10.0.0.0/8)) then { accept; } }`, `if (is_same_as) then { if ((net ~ 172.16.0.0/12))
    then { reject; } }`, `reject;`."""
    p = _import("peer_type")
    tagged = _route(communities=((65000, 100),))
    assert p(IBGP, NET("198.51.100.0/24"), tagged).local_pref == 2147483547
    assert p(EBGP, NET("198.51.100.0/24"), tagged) is None
    f = _filter("peer_type")
    assert set(export_routes(OWN, [f], ibgp=False, local_as=64512)) == {NET("10.0.1.0/26")}
    assert export_routes(OWN, [f], ibgp=True) == {}


def test_large_community():
    """importFilterV4: `if (((65000, 100, 200) ~ bgp_large_community)) then {
    bgp_large_community.add((65001, 300, 400)); accept; }  reject;`."""
    p = _import("large_community")
    got = p(EBGP, NET("198.51.100.0/24"), _route(large_communities=((65000, 100, 200),)))
    assert got.large_communities == ((65000, 100, 200), (65001, 300, 400))
    assert p(EBGP, NET("198.51.100.0/24"), _route(communities=((65000, 100),))) == "rejected by filter 'test-filter-large-comm' importV4[1]"


def test_match_interface_and_source():
    """importFilterV4: `if ((net ~ 44.0.0.0/16)) then { accept; }`, `if ((net ~ 44.1.0.0/16)&&
    ((defined(source))&&(source ~ [ RTS_BGP ]))) then { reject; }`, `if (((defined(source))&&
    (source ~ [ RTS_BGP ]))) then { accept; }`; exportFilterV4: `if ((net !~ 77.0.0.0/16)&&
    ((defined(ifname))&&(ifname ~ "eth0"))) then { accept; }` ... `reject;`."""
    p = _import("match_interface")
    assert p(EBGP, NET("44.0.1.0/24"), _route()) is None
    assert p(EBGP, NET("44.1.1.0/24"), _route()) == "rejected by filter 'test-filter-match-interface' importV4[1] (In 44.1.0.0/16)"
    assert p(EBGP, NET("198.51.100.0/24"), _route()) is None  # every imported route is RemotePeers
    assert export_routes(OWN, [_filter("match_interface")], ibgp=True) == {}  # ours: no interface, not learned
    src = _import("match_source")
    assert src(EBGP, NET("198.51.100.0/24"), _route()) is None
    assert export_routes(OWN, [_filter("match_source")], ibgp=True) == {}


def test_kubevirt_live_migration():
    """importFilterV4: 65000:100 -> `bgp_local_pref = 2147483547` (setPriority 100); [= 65000 * =] ->
    `bgp_local_pref = 2147483447` (200); accept. exportFilterV4: eBGP rules on priority 100 and 200,
    then reject: a route of ours at the normal priority 1024 goes nowhere."""
    p = _import("kubevirt_live_migration")
    assert p(EBGP, NET("198.51.100.0/24"), _route(communities=((65000, 100),))).local_pref == 2147483547
    assert p(EBGP, NET("198.51.100.0/24"), _route(as_path=(65000,))).local_pref == 2147483447
    assert export_routes(OWN, [_filter("kubevirt_live_migration")], ibgp=False, local_as=64512) == {}
