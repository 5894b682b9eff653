"""ExaBGP's neighbour matching made linear: the same peers as ExaBGP's own matcher, for the
descriptions the agent writes and for the ones it does not."""
from __future__ import annotations

from exabgp.reactor.api.command.limit import extract_neighbors
from exabgp.reactor.api.command.limit import match_neighbor as exabgp_match_neighbor
from exabgp.reactor.api.command.limit import match_neighbors as exabgp_match_neighbors

from calico_bgp.speaker.exabgp_fastpath import match_neighbors, neighbor_address

PEERS = [f"neighbor 198.18.0.{i} local-ip 198.18.0.1 local-as 64512 peer-as {64512 if i % 2 else 65001} "
         f"router-id 198.18.0.1 family-allowed in-open" for i in range(2, 40)] + [
    "neighbor 2001:db8::2 local-ip 2001:db8::1 local-as 64512 peer-as 64512 router-id 198.18.0.1 "
    "family-allowed in-open"]

COMMANDS = [
    "neighbor 198.18.0.2 announce route 198.19.0.0/26 next-hop self",
    "neighbor 198.18.0.3 , neighbor 198.18.0.30 , neighbor 2001:db8::2 announce attributes next-hop self nlri 198.19.0.0/26",
    "neighbor 198.18.0.2 , neighbor 198.18.0.2 announce attributes next-hop self nlri 198.19.0.0/26",  # twice: once
    "neighbor 198.18.0.200 announce route 198.19.0.0/26 next-hop self",  # not configured: nobody
    "neighbor 198.18.0.3 peer-as 64512 announce route 198.19.0.0/26 next-hop self",  # narrowed: ExaBGP's matcher
    "neighbor 198.18.0.4 peer-as 64512 announce route 198.19.0.0/26 next-hop self",  # narrowed out
    "neighbor * announce route 198.19.0.0/26 next-hop self",
    "neighbor 198.18.0.3 , neighbor * peer-as 65001 announce route 198.19.0.0/26 next-hop self",
    "announce route 198.19.0.0/26 next-hop self",  # no neighbour named: every peer
    "neighbor 198.18.0.3 local-ip 198.18.0.1 , neighbor 198.18.0.5 announce route 198.19.0.0/26 next-hop self",
]


def test_the_same_peers_as_exabgps_own_matcher():
    for command in COMMANDS:
        descriptions, _ = extract_neighbors(command)
        assert match_neighbors(PEERS, descriptions, exabgp_match_neighbor) == \
            exabgp_match_neighbors(PEERS, descriptions), command


def test_only_a_bare_address_takes_the_fast_way():
    assert neighbor_address(["neighbor 198.18.0.2"]) == "198.18.0.2"
    assert neighbor_address(["neighbor *"]) is None
    assert neighbor_address(["neighbor 198.18.0.2", "peer-as 64512"]) is None


def test_two_hundred_neighbours_need_no_regular_expression():
    peers = [f"neighbor 198.18.1.{i} local-ip 198.18.0.1 local-as 64512 peer-as 64512 router-id 198.18.0.1 "
             f"family-allowed in-open" for i in range(200)]
    command = " , ".join(f"neighbor 198.18.1.{i}" for i in range(1, 200)) + " announce attributes next-hop self nlri 198.19.0.0/26"
    descriptions, rest = extract_neighbors(command)
    calls = []

    def counting(description, name):
        calls.append(1)
        return exabgp_match_neighbor(description, name)

    assert match_neighbors(peers, descriptions, counting) == peers[1:]
    assert calls == [] and rest.startswith("announce attributes")
