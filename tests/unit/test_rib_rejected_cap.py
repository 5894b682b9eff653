"""The RIB keeps at most `max_rejected` rejected paths per peer (it used to be: 200k rejected /128s were all
kept, 140 MB that stayed); the rest are counted, and what that costs soft reconfiguration."""
import ipaddress

from calico_bgp.routing.attributes import PathAttributes

from calico_bgp.routing.path import LocalSpeaker, Peer

from calico_bgp.routing.rib import MAX_REJECTED_PER_PEER, Rib

A = Peer("198.18.1.2", 65001, "198.18.1.2", ibgp=False)
B = Peer("198.18.1.3", 65002, "198.18.1.3", ibgp=False)
POOL = ipaddress.ip_network("198.19.0.0/16")


def in_pool(_peer, prefix, _attrs):
    return None if prefix.version == 4 and prefix.subnet_of(POOL) else "outside every pool"


def host_routes(first: str, n: int) -> list[ipaddress.IPv6Network]:
    base = int(ipaddress.ip_address(first))
    return [ipaddress.ip_network((base + i, 128)) for i in range(n)]


def test_the_default_cap_is_ten_thousand_per_peer():
    assert MAX_REJECTED_PER_PEER == 10_000


def test_rejected_paths_beyond_the_cap_are_counted_not_kept_per_peer():
    rib = Rib(LocalSpeaker(64512, "198.18.1.1"), in_pool, max_rejected=100)
    outside = host_routes("2001:db8:ff::", 250)
    rib.update(A, dict.fromkeys(outside, PathAttributes("2001:db8:1::2")))
    rib.update(B, dict.fromkeys(outside[:10], PathAttributes("2001:db8:1::3")))  # its own cap, its own count
    assert len(rib.rejected(A.address)) == 100 and rib.rejected_not_kept(A.address) == 150
    assert rib.rejected_count(A.address) == 250  # what status shows: every rejected path
    assert (rib.rejected_count(B.address), rib.rejected_not_kept(B.address)) == (10, 0)
    # a kept one announced again (new attributes) stays kept, not counted twice
    rib.update(A, {outside[0]: PathAttributes("2001:db8:1::9")})
    assert rib.rejected_count(A.address) == 250
    # withdrawn: kept ones leave the list, the others the count
    rib.update(A, {}, outside)
    assert (rib.rejected_count(A.address), rib.rejected_not_kept(A.address), rib.rejected(A.address)) == (0, 0, [])
    rib.update(A, dict.fromkeys(outside, PathAttributes("2001:db8:1::2")))
    assert rib.peer_down(A.address) == set() and rib.rejected_count(A.address) == 0


def test_a_policy_change_accepts_the_kept_rejected_paths_only_and_a_refresh_counts_anew():
    """What a capped peer loses: soft reconfiguration re-judges the paths kept; the others need the
    peer to send them again (the agent asks for a ROUTE-REFRESH)."""
    policy = {"pool": ipaddress.ip_network("198.19.0.0/16")}
    rib = Rib(LocalSpeaker(64512, "198.18.1.1"), lambda _p, prefix, _a: None if prefix.subnet_of(policy["pool"]) else "outside",
              max_rejected=10)
    outside = [ipaddress.ip_network(f"198.18.200.{i}/32") for i in range(30)]
    rib.update(A, dict.fromkeys(outside, PathAttributes("198.18.1.2")))
    policy["pool"] = ipaddress.ip_network("198.18.0.0/16")
    changed = rib.reapply_policy([A])
    assert len(changed) == 10 and rib.rejected_not_kept(A.address) == 20
    rib.forget_not_kept(A.address)
    rib.update(A, dict.fromkeys(outside, PathAttributes("198.18.1.2")))  # what the refresh brings
    assert len(rib) == 30 and rib.rejected_count(A.address) == 0


def test_an_accepted_path_waiting_in_a_rebuilt_rib_is_never_lost_to_the_cap():
    rib = Rib(LocalSpeaker(64512, "198.18.1.1"), in_pool, max_rejected=5)
    inside = [ipaddress.ip_network(f"198.19.0.{i}/32") for i in range(20)]
    rib.update(A, dict.fromkeys(inside, PathAttributes("198.18.1.2")))
    new = rib.rebuilt(LocalSpeaker(64512, "198.18.1.9"))
    assert new.reapply_policy([A]) == set(inside) and new.rejected_not_kept(A.address) == 0
