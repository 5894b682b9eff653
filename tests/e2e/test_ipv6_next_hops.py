"""IPv6 next hops from real ToRs: BIRD 2 and FRR on direct eBGP IPv6 sessions with one node agent.

Both routers send their global address and their link-local one (RFC 2545 section 3, 32 bytes):
the agent installs the ToRs' in-pool prefixes via the global one when it is on the link, and via
the link-local one on the session's interface when the global one is not (each router told to
announce a global next hop off the link). Two ToRs announcing one prefix that way give a multipath
route of two (link-local gateway, device) hops. Traffic to an address behind each ToR flows.

    n1 eth0 -- hub bridge (2001:db8::/64) -- tor-bird (BIRD, 2001:db8::60, AS 65060)
    n1 eth1 -- its own link (2001:db8:2::/64) -- tor-frr (FRR, 2001:db8:2::61, AS 65061)
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from lab.bird import Bird, BirdPeer
from lab.clab import Bind, NodeDef
from lab.cluster import MeshCluster, mesh
from lab.net import sh, wait_for
from lab.routers import Frr
from tests.marks import needs_root

pytestmark = [needs_root,
              pytest.mark.skipif(shutil.which("etcd") is None, reason="needs etcd (./bootstrap.sh setup)"),
              pytest.mark.skipif(shutil.which("bird") is None, reason="needs BIRD 2 (bird)"),
              pytest.mark.skipif(not Path("/usr/lib/frr/bgpd").exists(), reason="needs FRR (/usr/lib/frr/bgpd)")]

RESOURCES = """
kind: IPPool
apiVersion: projectcalico.org/v3
metadata: {name: pods4}
spec: {cidr: 198.19.0.0/16}
---
kind: IPPool
apiVersion: projectcalico.org/v3
metadata: {name: pods6}
spec: {cidr: "2001:db8:1::/64", blockSize: 122}
"""
# The ToRs' prefixes are in the pool but in no node's block: origin validation (calico_bgp/routing/origin.py)
# would reject them as nobody's; it is off for these peers, the subject here is their next hops.
PEERS = """
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {name: tor-bird}
spec: {node: n1, peerIP: "2001:db8::60", asNumber: 65060, originValidation: Disabled}
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {name: tor-frr}
spec: {node: n1, peerIP: "2001:db8:2::61", asNumber: 65061, sourceAddress: "2001:db8:2::1", originValidation: Disabled}
"""
BIRD_NET, FRR_NET, SHARED = "2001:db8:1:0:60::/80", "2001:db8:1:0:61::/80", "2001:db8:1:0:66::/80"
BIRD_ADDR, FRR_ADDR, SHARED_ADDR = "2001:db8:1:0:60::1", "2001:db8:1:0:61::1", "2001:db8:1:0:66::1"
ORIGIN_IGP = "filter { if source = RTS_STATIC then { bgp_origin = ORIGIN_IGP; accept; } reject; }"


def _link_local(ns: str) -> str:
    """The namespace's eth0 link-local address once its duplicate address detection is over."""
    def ready() -> str | None:
        links = json.loads(sh("ip", "-j", "-6", "addr", "show", "dev", "eth0", "scope", "link", ns=ns).stdout or "[]")
        ready = [a["local"] for x in links for a in x.get("addr_info", []) if "local" in a and not a.get("tentative")]
        return ready[0] if ready else None
    return wait_for(f"{ns}: a link-local address on eth0", ready, timeout=20)


def _routes6(c: MeshCluster, node: str) -> dict[str, list[tuple[str, str]]]:
    """prefix -> sorted (gateway, device) of our protocol's IPv6 routes in the node's main table."""
    out = {}
    for r in json.loads(sh("ip", "-j", "-6", "route", "show", "proto", "86", ns=c.nodes[node]).stdout or "[]"):
        hops = r.get("nexthops") or [r]
        out[r["dst"]] = sorted((h.get("gateway", ""), h.get("dev", "")) for h in hops)
    return out


def _tor(c: MeshCluster, name: str, index: int, address: str, own_link: bool = False) -> tuple[str, str]:
    """A ToR namespace with its global address, on the hub (2001:db8::INDEX) or on a link of its own to
    n1's eth1 (2001:db8:2::INDEX, n1 2001:db8:2::1), `address` on its loopback (something to ping
    behind it) and its link-local address ready: (namespace, link-local)."""
    if own_link:
        ns = c.net.namespace(name)
        c.net.veth(c.nodes["n1"], "eth1", ns, "eth0")
        c.net.address(c.nodes["n1"], "eth1", "2001:db8:2::1/64")
        c.net.address(ns, "eth0", f"2001:db8:2::{index}/64")
    else:
        ns = c.add_node(name, index, ipv6=True)
    sh("ip", "addr", "add", f"{address}/128", "dev", "lo", ns=ns)
    return ns, _link_local(ns)


def _start_bird(c: MeshCluster, ns: str, next_hop: str | None = None) -> Bird:
    bird = Bird(ns, router_id="198.18.0.60", tmp=c.run_dir / "tor-bird")
    channel = (f"next hop address {next_hop};",) if next_hop else ()
    bird.configure([BirdPeer(name="n1", local_as=65060, neighbor="2001:db8::1", peer_as=64512,
                             local_address="2001:db8::60", ipv4=False, ipv6=True, next_hop_self=not next_hop,
                             export=ORIGIN_IGP, channel=channel)], static6=[BIRD_NET, SHARED])
    return bird


def _start_frr(c: MeshCluster, ns: str, link_local: str, global_next_hop: str | None = None) -> Frr:
    """FRR with its session to n1 shut until zebra knows eth0's link-local address: bgpd takes the
    address it sends beside the global one when the session opens, and a session opening in the
    first second after start may find none yet ("does not have a v6 LL address")."""
    d = c.run_dir / "tor-frr"
    d.mkdir(parents=True, exist_ok=True)
    rmap = ([" neighbor 2001:db8:2::1 route-map OFF-LINK out"] if global_next_hop else [])
    conf = "\n".join([
        "frr defaults datacenter", "hostname tor-frr", f"log file {d}/run/frr-debug.log debugging",
        "debug bgp updates out", "!",
        "router bgp 65061", " bgp router-id 198.18.0.61", " no bgp ebgp-requires-policy",
        " no bgp network import-check", " neighbor 2001:db8:2::1 remote-as 64512",
        " neighbor 2001:db8:2::1 update-source 2001:db8:2::61", " neighbor 2001:db8:2::1 timers connect 1",
        " neighbor 2001:db8:2::1 shutdown",
        " address-family ipv6 unicast", f"  network {FRR_NET}", f"  network {SHARED}",
        "  neighbor 2001:db8:2::1 activate", *[f" {x}" for x in rmap], " exit-address-family", "!",
        *(["route-map OFF-LINK permit 10", f" set ipv6 next-hop global {global_next_hop}", "!"]
          if global_next_hop else [])]) + "\n"
    path = d / "frr.conf"
    path.write_text(conf)
    frr = Frr(NodeDef("tor-frr", "linux", binds=(Bind(str(path), "/etc/frr/frr.conf"),)), ns, d / "run")
    frr.pids = frr.start(c.ledger)  # type: ignore[attr-defined]
    wait_for("FRR's zebra knows eth0's link-local address", lambda: link_local in frr.vtysh("show interface eth0"),
             timeout=20)
    time.sleep(1)  # zebra to bgpd
    frr.vtysh("configure terminal", "router bgp 65061", "no neighbor 2001:db8:2::1 shutdown")
    return frr


@pytest.fixture(scope="module")
def rack(etcd_server):
    with mesh(etcd_server, "v6nh", RESOURCES, ["n1"], ipv6=True) as c:
        bird_ns, bird_ll = _tor(c, "torb", 60, BIRD_ADDR)
        frr_ns, frr_ll = _tor(c, "torf", 61, FRR_ADDR, own_link=True)
        for ns in (bird_ns, frr_ns):
            sh("ip", "addr", "add", f"{SHARED_ADDR}/128", "dev", "lo", ns=ns)
        c.tors = {"bird": (bird_ns, bird_ll), "frr": (frr_ns, frr_ll)}  # type: ignore[attr-defined]
        wait_for("n1's BGPPeers accepted (its Node exists)", lambda: c.cli("apply", "-f", "-", input=PEERS, check=False)
                 .returncode == 0, timeout=30)
        yield c


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _stop_tors(c: MeshCluster, bird: Bird, frr: Frr) -> None:
    """Both ToRs stopped, their sessions down and their prefixes out of n1's kernel: the next case
    (one rack for the module) starts them afresh, configured its way."""
    bird.stop()
    for pid in frr.pids:  # type: ignore[attr-defined]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    wait_for("FRR's daemons gone", lambda: all(_gone(p) for p in frr.pids), timeout=15)  # type: ignore[attr-defined]
    wait_for("the ToRs' sessions down and their prefixes out of n1's kernel", lambda: not (
        {BIRD_NET, FRR_NET, SHARED} & set(_routes6(c, "n1")))
        and not any(s["state"] == "Established" for s in c.status("n1").get("sessions", [])), timeout=30)


def _established(c: MeshCluster) -> bool:
    states = {s["peer"]: s["state"] for s in c.status("n1").get("sessions", [])}
    return states.get("2001:db8::60") == "Established" and states.get("2001:db8:2::61") == "Established"


def _route_get(c: MeshCluster, address: str) -> str:
    return sh("ip", "-6", "route", "get", address, ns=c.nodes["n1"]).stdout


def _ping(c: MeshCluster, address: str) -> bool:
    return sh("ping", "-6", "-c", "2", "-W", "1", "-i", "0.2", address, ns=c.nodes["n1"], check=False,
              timeout=15).returncode == 0


def test_routes_from_bird_and_frr_go_via_their_global_next_hop_on_the_link(rack):
    c = rack
    bird = _start_bird(c, c.tors["bird"][0])
    frr = _start_frr(c, *c.tors["frr"])
    try:
        wait_for("both IPv6 sessions Established", lambda: _established(c), timeout=90)
        want = {BIRD_NET: [("2001:db8::60", "eth0")], FRR_NET: [("2001:db8:2::61", "eth1")],
                SHARED: [("2001:db8:2::61", "eth1"), ("2001:db8::60", "eth0")]}
        wait_for("the ToRs' prefixes in n1's kernel via their global addresses",
                 lambda: {p: h for p, h in _routes6(c, "n1").items() if p in want} == want, timeout=60)
        assert "via 2001:db8::60 dev eth0" in _route_get(c, BIRD_ADDR)
        assert "via 2001:db8:2::61 dev eth1" in _route_get(c, FRR_ADDR)
        assert _ping(c, BIRD_ADDR) and _ping(c, FRR_ADDR) and _ping(c, SHARED_ADDR)
        # FRR, by default, sent its link-local address beside the global one (its `debug bgp updates
        # out` line for the 32-byte next hop, bgpd/bgp_updgrp_packet.c bpacket_reformat_for_peer)
        log = (c.run_dir / "tor-frr" / "run" / "frr-debug.log").read_text()
        assert f"2001:db8:2::1 send UPDATE w/ mp_nexthops 2001:db8:2::61, {c.tors['frr'][1]}" in log, log[-2000:]
    finally:
        _stop_tors(c, bird, frr)


def test_a_global_next_hop_off_the_link_gives_way_to_the_link_local_one_on_the_interface(rack):
    """Both ToRs announce a global next hop on no link of n1's: the routes go via their link-local
    addresses on the session's interface, and the prefix both announce is one multipath route of
    two (link-local address, device) hops, one per link."""
    c = rack
    (bird_ns, bird_ll), (frr_ns, frr_ll) = c.tors["bird"], c.tors["frr"]
    bird = _start_bird(c, bird_ns, next_hop="2001:db8:99::60")
    frr = _start_frr(c, frr_ns, frr_ll, global_next_hop="2001:db8:99::61")
    try:
        wait_for("both IPv6 sessions Established", lambda: _established(c), timeout=90)
        want = {BIRD_NET: [(bird_ll, "eth0")], FRR_NET: [(frr_ll, "eth1")],
                SHARED: sorted([(bird_ll, "eth0"), (frr_ll, "eth1")])}
        wait_for("the ToRs' prefixes via their link-local addresses on eth0 and eth1",
                 lambda: {p: h for p, h in _routes6(c, "n1").items() if p in want} == want, timeout=60)
        assert f"via {bird_ll} dev eth0" in _route_get(c, BIRD_ADDR)
        assert f"via {frr_ll} dev eth1" in _route_get(c, FRR_ADDR)
        assert _ping(c, BIRD_ADDR) and _ping(c, FRR_ADDR) and _ping(c, SHARED_ADDR)
        routes = json.loads(c.cli("routes", "--node", "n1", "-o", "json").stdout)["n1"]
        shared = next(r for r in routes if r["prefix"] == SHARED)
        assert sorted(shared["nextHops"]) == sorted([f"{bird_ll}%eth0", f"{frr_ll}%eth1"]) and shared["inKernel"]
    finally:
        _stop_tors(c, bird, frr)


def test_a_link_local_next_hop_from_a_peer_not_directly_connected_is_rejected_with_its_reason(rack):
    """A peer on a loopback (reached through reachableBy, several hops away as far as n1 knows)
    announcing one prefix via a link-local next hop and one via its global address: the first is
    rejected, shown in `routes --rejected` with why, and kept out of the kernel; the second installed.
    The peer is ExaBGP itself (a real router would not send this)."""
    from calico_bgp.speaker.process import exabgp_command, exabgp_env
    from lab.net import Process

    c = rack
    ns = c.add_node("tore", 62, ipv6=True)
    sh("ip", "addr", "add", "2001:db8:ff::62/128", "dev", "lo", ns=ns)
    conf = c.run_dir / "tor-exa.conf"
    conf.write_text("\n".join([
        "neighbor 2001:db8::1 {", "  router-id 198.18.0.62;", "  local-address 2001:db8:ff::62;",
        "  local-as 65062;", "  peer-as 64512;", "  hold-time 30;", "  family { ipv6 unicast; }",
        "  static {", "    route 2001:db8:1:0:62::/80 next-hop fe80::62;",
        "    route 2001:db8:1:0:63::/80 next-hop 2001:db8::62;", "  }", "}"]) + "\n")
    Process(c.ledger, ns, [*exabgp_command(), str(conf)], c.run_dir / "logs" / "tor-exa.log",
            env=exabgp_env(exabgp_tcp_bind=""))
    c.apply("""kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {name: tor-exa}
spec: {node: n1, peerIP: "2001:db8:ff::62", asNumber: 65062, reachableBy: "2001:db8::62", originValidation: Disabled}
""")
    reason = "link-local next hop fe80::62 from a peer that is not directly connected"
    rejected = wait_for("the link-local path rejected", lambda: [
        (r["prefix"], r["peer"], r["reason"]) for r in json.loads(
            c.cli("routes", "--node", "n1", "--rejected", "-o", "json").stdout)["n1"]], timeout=90)
    assert rejected == [("2001:db8:1:0:62::/80", "2001:db8:ff::62", reason)]
    wait_for("the global path in the kernel", lambda: _routes6(c, "n1").get("2001:db8:1:0:63::/80")
             == [("2001:db8::62", "eth0")], timeout=30)
    assert "2001:db8:1:0:62::/80" not in _routes6(c, "n1")
