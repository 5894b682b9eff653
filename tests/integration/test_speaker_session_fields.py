"""The BGPPeer / BGPConfiguration fields that change a session on the wire, through our Speaker
(ExaBGP in one namespace) against BIRD 2 in others, as Calico's BIRD configuration makes them:

- ttlSecurity N: BIRD's `ttl security on; multihop N` (confd bgp_processor.go buildPeerFromData), on
  sessions we dial and sessions the peer dials, beside a session without it on the same address;
- localASNumber: the session's own local AS is the one BIRD sees, and the one in the AS path;
- nextHopMode Self on a reflected route: the peer sees our address, the others the route's own;
  changing it re-sends the route and leaves the session up;
- bindMode NodeIP: ExaBGP listens on the node's BGP address only (confd: `listen bgp address`)."""
from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import attrs
import pytest
import trio

from calico_bgp.agent.neighbors import neighbor_for
from calico_bgp.routing.reflection import Reflected
from calico_bgp.routing.topology import Session
from calico_bgp.speaker.commands import route_attributes
from calico_bgp.speaker.neighbor import Neighbor
from calico_bgp.speaker.speaker import Speaker
from lab.bird import Bird, BirdPeer, same_since
from lab.net import netns, sh, veth
from tests.integration.test_speaker_bird import poll
from tests.marks import needs_root

pytestmark = [needs_root, pytest.mark.root]

AS_US, AS_BIRD = 65000, 65001
GTSM = ("ttl security on;", "multihop 1;")  # what confd renders for ttlSecurity: 1
MULTIHOP = ("multihop;",)  # Calico's bgp_template: BIRD then sends with TTL 64
# the same GTSM on a direct session (BIRD: hops = multihop ?: 1), whose next hop on the link BIRD
# takes as it is (these BIRDs have no IGP table to resolve a multihop session's next hop in)
GTSM_DIRECT = ("direct;", "ttl security on;")


@pytest.fixture
def lab(tmp_path: Path):
    """spk <-> b1 (198.18.1.0/24), spk <-> b2 (198.18.2.0/24, 2001:db8:2::/64), spk <-> b3 (198.18.3.0/24, with a route
    to our 198.18.1.1)."""
    with contextlib.ExitStack() as stack:
        spk = stack.enter_context(netns("s"))
        b1 = stack.enter_context(netns("b"))
        b2 = stack.enter_context(netns("c"))
        veth(spk, "to-b1", b1, "eth0", ("198.18.1.1/24",), ("198.18.1.2/24",))
        veth(spk, "to-b2", b2, "eth0", ("198.18.2.1/24", "2001:db8:2::1/64"), ("198.18.2.2/24", "2001:db8:2::2/64"))
        bird1 = stack.enter_context(Bird(b1, "198.18.1.2", tmp_path / "bird1"))
        bird2 = stack.enter_context(Bird(b2, "198.18.2.2", tmp_path / "bird2"))
        b3 = stack.enter_context(netns("d"))
        veth(spk, "to-b3", b3, "eth0", ("198.18.3.1/24",), ("198.18.3.2/24",))
        sh("ip", "route", "add", "198.18.1.1/32", "via", "198.18.3.1", ns=b3)  # b3 dials our address on b1's link
        bird3 = stack.enter_context(Bird(b3, "198.18.3.2", tmp_path / "bird3"))
        yield {"spk": spk, "bird1": bird1, "bird2": bird2, "bird3": bird3, "tmp": tmp_path}


def n4(peer: str, local: str, peer_as: int = AS_BIRD, local_as: int = AS_US, **kw) -> Neighbor:
    return Neighbor(peer_address=peer, peer_as=peer_as, local_as=local_as, local_address=local,
                    router_id="198.18.1.1", hold_time=9, **kw)


def listening(ns: str) -> set[str]:
    out = subprocess.run(["ip", "netns", "exec", ns, "ss", "-Htln"], capture_output=True, text=True, check=True)
    return {line.split()[3] for line in out.stdout.splitlines() if line.strip()}


async def test_gtsm_and_local_as_on_the_wire(lab, nursery):
    bird1: Bird = lab["bird1"]
    bird2: Bird = lab["bird2"]
    bird3: Bird = lab["bird3"]
    # b1 and b3 dial the one address of ours (one listening socket): b1 with GTSM, b3 without
    # the two sessions that lose GTSM below hold 6 s at BIRD: the window that shows they never open
    # without it must outlast BIRD's hold timer and its reconnection after it
    gtsm_in = BirdPeer("gtsm", AS_BIRD, "198.18.1.1", AS_US, local_address="198.18.1.2", hold_time=6, extra=GTSM)
    plain_in = BirdPeer("plain", AS_BIRD, "198.18.1.1", AS_US, local_address="198.18.3.2", hold_time=9,
                        extra=MULTIHOP)
    bird1.configure([gtsm_in])
    bird3.configure([plain_in])
    # we dial b2, with GTSM, from a local AS that is not the node's (BGPPeer localASNumber); b2 dials
    # us over IPv6 with GTSM (IPV6_MINHOPCOUNT on the accepted connection)
    exa = BirdPeer("exa", AS_BIRD, "198.18.2.1", 65099, passive=True, hold_time=9, extra=GTSM_DIRECT)
    exa6 = BirdPeer("exa6", AS_BIRD, "2001:db8:2::1", AS_US, hold_time=6, ipv4=False, ipv6=True, extra=GTSM_DIRECT)
    bird2.configure([exa, exa6])

    speaker = Speaker(lab["tmp"] / "spk", netns=lab["spk"])
    await nursery.start(speaker.run)
    sessions = [Session(peer_address="198.18.1.2", peer_as=AS_BIRD, local_as=AS_US, local_address="198.18.1.1",
                        kind="fabric", passive=True, hold_time=9, ttl_security=1),
                Session(peer_address="198.18.3.2", peer_as=AS_BIRD, local_as=AS_US, local_address="198.18.1.1",
                        kind="fabric", passive=True, hold_time=9),
                Session(peer_address="198.18.2.2", peer_as=AS_BIRD, local_as=65099, local_address="198.18.2.1",
                        kind="fabric", hold_time=9, ttl_security=1),
                Session(peer_address="2001:db8:2::2", peer_as=AS_BIRD, local_as=AS_US, local_address="2001:db8:2::1",
                        kind="fabric", passive=True, hold_time=9, ttl_security=1)]
    neighbors = [neighbor_for(s, "198.18.1.1", 179, {}, {}) for s in sessions]
    await speaker.set_neighbors(neighbors)
    with trio.fail_after(40):
        for peer in ("198.18.1.2", "198.18.3.2", "198.18.2.2", "2001:db8:2::2"):
            await speaker.wait_state(peer, "up")
    assert bird1.established("gtsm") and bird3.established("plain") and bird2.established("exa")

    # the AS b2 sees is the session's, in the AS path too
    await speaker.announce(None, ["198.19.0.0/26"], wait=True)
    await poll(lambda: bird2.routes("master4", "exa").get("198.19.0.0/26"), what="route in bird2")
    assert "BGP.as_path: 65099\n" in bird2.route_all("198.19.0.0/26") + "\n"

    # BIRD without GTSM sends with TTL 64: our side drops it and the session never opens on our side
    # (BIRD, which does get our OPEN and KEEPALIVE, shows Established until its hold timer expires,
    # and dials again), while the other session on the same listening address stays up
    plain_since = bird3.protocols()["plain"]["since"]
    bird1.configure([BirdPeer("gtsm", AS_BIRD, "198.18.1.1", AS_US, local_address="198.18.1.2", hold_time=6,
                              extra=MULTIHOP)])
    bird2.configure([exa, attrs.evolve(exa6, extra=("direct;",))])  # hop limit 1 now
    for peer in ("198.18.1.2", "2001:db8:2::2"):
        await poll(lambda peer=peer: speaker.peers[peer].state != "up", what=f"{peer} reset by BIRD's reconfiguration")
    for _ in range(100):  # 10 s: more than the 6 s hold time, and a reconnection after it
        assert {speaker.peers[p].state for p in ("198.18.1.2", "2001:db8:2::2")}.isdisjoint({"up"}), \
            "a session without GTSM opened"
        await trio.sleep(0.1)
    assert bird3.established("plain") and same_since(bird3.protocols()["plain"]["since"], plain_since)
    assert speaker.peers["198.18.3.2"].state == "up"

    # and with it again, it opens
    bird1.configure([gtsm_in])
    bird2.configure([exa, exa6])
    with trio.fail_after(40):
        await speaker.wait_state("198.18.1.2", "up")
        await speaker.wait_state("2001:db8:2::2", "up")
    assert speaker.peers["198.18.2.2"].state == "up" and bird2.established("exa")


async def test_next_hop_self_on_reflected_routes(lab, nursery):
    bird1: Bird = lab["bird1"]
    bird2: Bird = lab["bird2"]
    # iBGP on the link (`direct`): a next hop on that link is taken as it is
    bird1.configure([BirdPeer("reflector", AS_US, "198.18.1.1", AS_US, passive=True, hold_time=9, extra=("direct;",))])
    bird2.configure([BirdPeer("reflector", AS_US, "198.18.2.1", AS_US, passive=True, hold_time=9, extra=("direct;",))])
    speaker = Speaker(lab["tmp"] / "spk", netns=lab["spk"])
    await nursery.start(speaker.run)
    keep = n4("198.18.1.2", "198.18.1.1", peer_as=AS_US)
    via_us = n4("198.18.2.2", "198.18.2.1", peer_as=AS_US, next_hop_self=True)
    await speaker.set_neighbors([keep, via_us])
    with trio.fail_after(40):
        await speaker.wait_state("198.18.1.2", "up")
        await speaker.wait_state("198.18.2.2", "up")

    # a client's route (next hop 198.18.1.9, on b1's link) reflected to both
    path = route_attributes(next_hop="198.18.1.9", originator_id="198.18.1.9", cluster_list=["198.18.1.1"],
                            local_pref=100)
    await speaker.reflect({"198.19.7.0/26": Reflected(path, frozenset({"198.18.1.2", "198.18.2.2"}))})
    assert await poll(lambda: bird1.routes("master4", "reflector").get("198.19.7.0/26"), what="kept") == ["198.18.1.9"]
    assert await poll(lambda: bird2.routes("master4", "reflector").get("198.19.7.0/26"), what="self") == ["198.18.2.1"]

    # b1's BGPPeer changes to nextHopMode Self: the route comes again via us, the session stays
    since = bird1.protocols()["reflector"]["since"]
    await speaker.set_neighbors([n4("198.18.1.2", "198.18.1.1", peer_as=AS_US, next_hop_self=True), via_us])
    await poll(lambda: bird1.routes("master4", "reflector").get("198.19.7.0/26") == ["198.18.1.1"], what="now via us")
    assert same_since(bird1.protocols()["reflector"]["since"], since) and bird1.established("reflector")
    assert speaker.window.errors == 0, "ExaBGP answered error to a command"


async def test_bind_mode_node_ip_listens_on_the_node_address_only(lab, nursery):
    """The node's BGP address is 198.18.1.1; its ToR b2 is reached from 198.18.2.1 on that link."""
    bird1: Bird = lab["bird1"]
    bird2: Bird = lab["bird2"]
    bird1.configure([BirdPeer("mesh", AS_US, "198.18.1.1", AS_US, hold_time=9)])  # dials us
    bird2.configure([BirdPeer("tor", AS_BIRD, "198.18.2.1", AS_US, passive=True, hold_time=9)])
    sessions = [Session(peer_address="198.18.1.2", peer_as=AS_US, local_as=AS_US, local_address="198.18.1.1",
                        kind="mesh", passive=True, hold_time=9),
                Session(peer_address="198.18.2.2", peer_as=AS_BIRD, local_as=AS_US, local_address="198.18.2.1",
                        kind="fabric", hold_time=9)]
    speaker = Speaker(lab["tmp"] / "spk", netns=lab["spk"])
    await nursery.start(speaker.run)

    await speaker.set_neighbors([neighbor_for(s, "198.18.1.1", 179, {}, {}) for s in sessions])  # bindMode None
    await poll(lambda: {"198.18.1.1:179", "198.18.2.1:179"} <= listening(lab["spk"]), what="both addresses")

    node_ip = frozenset({"198.18.1.1"})
    await speaker.set_neighbors([neighbor_for(s, "198.18.1.1", 179, {}, {}, node_ip) for s in sessions])
    await poll(lambda: "198.18.2.1:179" not in listening(lab["spk"]), what="the link address let go")
    assert {a for a in listening(lab["spk"]) if a.endswith(":179")} == {"198.18.1.1:179"}
    with trio.fail_after(40):  # both sessions come up: the mesh peer dials the node address, we dial the ToR
        await speaker.wait_state("198.18.1.2", "up")
        await speaker.wait_state("198.18.2.2", "up")
    assert bird1.established("mesh") and bird2.established("tor")
