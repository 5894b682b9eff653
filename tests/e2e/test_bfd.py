"""BFD toward the fabric, end to end: one node agent and two ToRs on its link, FRR (bgpd + bfdd,
`neighbor bfd`: its BGP session follows BFD) and BIRD 2 (a `protocol bfd` neighbour, its BGP session
not tied to it), hold time 9 s, both announcing a shared prefix (ECMP) and one of their own.

    hub bridge 198.18.0.0/24:  n1 .1 (agent)   tor-frr .60 (AS 65060)   tor-bird .61 (AS 65061)

- a ToR goes silent (nftables drops all its packets): with BFD its own prefix leaves n1's kernel and
  the shared one shrinks to the other ToR in under 1.5 s; the same without BFD waits for the hold
  timer (measured in the same test);
- the BFD process SIGKILLed: the agent drops no BGP session (the BIRD ToR's stays as it was), `status`
  says BFD unavailable meanwhile, BFD is back within 5 s. A dead BFD process is a BFD failure to its
  peers: FRR, whose BGP follows BFD, resets its session (it cannot tell a dead process from a dead
  link), and the session comes back the normal way;
- BFD packets with the wrong TTL, version or discriminator, sent from a ToR's namespace, do not
  disturb the session.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys
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
              pytest.mark.skipif(not Path("/usr/lib/frr/bfdd").exists(), reason="needs FRR's bgpd and bfdd")]

FRR, BIRD = "198.18.0.60", "198.18.0.61"
SHARED, OWN = "198.18.200.0/24", {FRR: "198.18.201.0/24", BIRD: "198.18.202.0/24"}
RESOURCES = """
kind: BGPConfiguration
apiVersion: projectcalico.org/v3
metadata: {name: default}
spec: {asNumber: 64512, nodeToNodeMeshEnabled: false}
---
kind: IPPool
apiVersion: projectcalico.org/v3
metadata: {name: pods}
spec: {cidr: 198.19.0.0/16, blockSize: 26}
---
kind: BGPFilter
apiVersion: projectcalico.org/v3
metadata: {name: fabric}
spec:
  importV4: [{action: Accept, cidr: 198.18.200.0/22, matchOperator: In}]
---
kind: BFDConfiguration
apiVersion: projectcalico.org/v3
metadata: {name: fabric}
spec:
  interfaces:
  - {matchPattern: "eth*", minimumRecvInterval: 100ms, minimumSendInterval: 100ms, idleSendInterval: 1s, multiplier: 3}
"""
SILENCE = ("table inet silence {\n chain in { type filter hook input priority -300; policy drop; }\n"
           " chain out { type filter hook output priority -300; policy drop; }\n}\n")


def _peers(bfd: dict[str, bool]) -> str:
    docs = []
    for name, ip, asn in (("tor-frr", FRR, 65060), ("tor-bird", BIRD, 65061)):
        mode = ", failureDetectionMode: BFDIfDirectlyConnected" if bfd[ip] else ""
        docs.append(f"kind: BGPPeer\napiVersion: projectcalico.org/v3\nmetadata: {{name: {name}}}\n"
                    f"spec: {{node: n1, peerIP: {ip}, asNumber: {asn}, holdTime: 9s, filters: [fabric]{mode}}}\n")
    return "---\n".join(docs)


def _start_frr(c: MeshCluster, ns: str) -> Frr:
    d = c.run_dir / "tor-frr"
    d.mkdir(parents=True, exist_ok=True)
    conf = "\n".join([
        "frr defaults datacenter", "hostname tor-frr", f"log file {d}/run/frr.log", "!",
        "bfd", " profile fast", "  receive-interval 100", "  transmit-interval 100", "  detect-multiplier 3",
        " !", "!",
        "router bgp 65060", " bgp router-id 198.18.0.60", " no bgp ebgp-requires-policy",
        " no bgp network import-check", " neighbor 198.18.0.1 remote-as 64512",
        " neighbor 198.18.0.1 timers 3 9", " neighbor 198.18.0.1 timers connect 1",
        " neighbor 198.18.0.1 bfd", " neighbor 198.18.0.1 bfd profile fast",
        " address-family ipv4 unicast", f"  network {SHARED}", f"  network {OWN[FRR]}", " exit-address-family",
        "!"]) + "\n"
    (d / "frr.conf").write_text(conf)
    (d / "daemons").write_text("zebra=yes\nbgpd=yes\nbfdd=yes\nstaticd=yes\n")
    frr = Frr(NodeDef("tor-frr", "linux", binds=(Bind(str(d / "frr.conf"), "/etc/frr/frr.conf"),
                                                 Bind(str(d / "daemons"), "/etc/frr/daemons"))), ns, d / "run")
    frr.start(c.ledger)
    return frr


def _start_bird(c: MeshCluster, ns: str) -> Bird:
    bird = Bird(ns, router_id=BIRD, tmp=c.run_dir / "tor-bird")
    bird.static4 = [SHARED, OWN[BIRD]]
    bird.peers = [BirdPeer(name="n1", local_as=65061, neighbor="198.18.0.1", peer_as=64512, local_address=BIRD,
                           hold_time=9)]
    bfd = ('protocol bfd { interface "eth0" { min rx interval 100 ms; min tx interval 100 ms; '
           'idle tx interval 1000 ms; multiplier 3; }; neighbor 198.18.0.1 dev "eth0"; }\n')
    bird.start(c.ledger, config=bird.render() + bfd)
    return bird


@pytest.fixture(scope="module")
def rack(etcd_server):
    with mesh(etcd_server, "bfd", RESOURCES, ["n1"]) as c:
        c.tors = {FRR: c.add_node("torf", 60), BIRD: c.add_node("torb", 61)}  # type: ignore[attr-defined]
        wait_for("n1's BGPPeers accepted (its Node exists)",
                 lambda: c.cli("apply", "-f", "-", input=_peers({FRR: True, BIRD: True}), check=False).returncode == 0,
                 timeout=30)
        c.frr = _start_frr(c, c.tors[FRR])  # type: ignore[attr-defined]
        c.bird = _start_bird(c, c.tors[BIRD])  # type: ignore[attr-defined]
        yield c


def _sessions(c: MeshCluster) -> dict[str, dict]:
    return {s["peer"]: s for s in c.status("n1")["sessions"]}


def _bfd(c: MeshCluster) -> dict:
    return c.status("n1")["bfd"]


def _bfd_states(c: MeshCluster, *peers: str) -> list[str]:
    """BFD's state toward each of `peers` ("" for none), from one status read."""
    states = {s["peer"]: s["state"] for s in _bfd(c)["sessions"]}
    return [states.get(p, "") for p in peers]


def _converged(c: MeshCluster, bfd: dict[str, bool]) -> bool:
    st, routes = c.status("n1"), c.routes("n1")  # one status read serves the sessions and BFD
    s = {x["peer"]: x for x in st["sessions"]}
    bfd_states = {x["peer"]: x["state"] for x in st["bfd"]["sessions"]}
    return (all(s.get(p, {}).get("state") == "Established" for p in (FRR, BIRD))
            and all(bfd_states.get(p, "") == ("Up" if on else "") for p, on in bfd.items())
            and routes.get(SHARED) == [FRR, BIRD] and routes.get(OWN[FRR]) == [FRR] and routes.get(OWN[BIRD]) == [BIRD])


def _settle(c: MeshCluster, bfd: dict[str, bool]) -> None:
    """BFD on or off toward each ToR, on both ends (FRR's BGP follows its BFD session: left on, it
    would reset the session when ours stops), and everything up and steady: converged, and again 2 s
    later. When the last _settle had this same `bfd`, nothing disturbed the rack since (_disturbed)
    and it is converged at the first look, that look is enough: the steadiness was shown then."""
    known_steady, c.steady = getattr(c, "steady", None) == bfd, None
    c.frr.vtysh("configure terminal", "router bgp 65060",  # type: ignore[attr-defined]
                *(["neighbor 198.18.0.1 bfd", "neighbor 198.18.0.1 bfd profile fast"] if bfd[FRR]
                  else ["no neighbor 198.18.0.1 bfd"]))
    c.apply(_peers(bfd))
    what = f"both sessions Established, BFD {bfd}, routes over both ToRs"
    if not (known_steady and _converged(c, bfd)):
        wait_for(what, lambda: _converged(c, bfd), timeout=90)
        time.sleep(2)
        wait_for(what + ", still", lambda: _converged(c, bfd), timeout=60)
    c.steady = dict(bfd)


def _disturbed(c: MeshCluster) -> None:
    """The rack was disturbed on purpose: the next _settle shows it steady again in full."""
    c.steady = None


def _silence_and_time(c: MeshCluster, tor: str, timeout: float) -> float:
    """Drop every packet of `tor`; seconds until its own prefix left n1's kernel and the shared one
    was left with the other ToR only. The ToR is heard again before returning."""
    other = BIRD if tor == FRR else FRR
    path = c.run_dir / "silence.nft"
    path.write_text(SILENCE)
    _disturbed(c)
    sh("nft", "-f", str(path), ns=c.tors[tor])
    start = time.monotonic()
    try:
        def gone() -> bool:
            r = c.routes("n1")
            return OWN[tor] not in r and r.get(SHARED) == [other]
        wait_for(f"{tor}'s routes out of n1's kernel", gone, timeout=timeout, interval=0.01)
        return time.monotonic() - start
    finally:
        sh("nft", "delete", "table", "inet", "silence", ns=c.tors[tor])


def _forget_resets(c: MeshCluster, tor: str) -> None:
    """Delete the ToR's BGPPeer (the next _settle applies it again): the agent forgets the resets a
    silence earned the peer, which would otherwise hold it idle 5 s, then 10, 20... before the next
    step could go on. The back-off itself is tests/e2e/test_hostile_peer.py's."""
    _disturbed(c)
    c.cli("delete", "bgppeer", "tor-frr" if tor == FRR else "tor-bird")
    wait_for(f"{tor} gone from n1's sessions", lambda: tor not in _sessions(c), timeout=30)


@pytest.mark.parametrize("tor", [FRR, BIRD], ids=["frr", "bird"])
def test_a_silent_tor_is_routed_around_within_the_detection_time_and_without_bfd_the_hold_time(rack, tor):
    c = rack
    _settle(c, {FRR: True, BIRD: True})
    with_bfd = _silence_and_time(c, tor, timeout=15)
    events = [json.loads(x) for x in c.cli("events", "--node", "n1", "-o", "json").stdout.splitlines() if x]
    assert [e for e in events if e["kind"] == "bfd_down" and e["peer"] == tor], events[-10:]
    _forget_resets(c, tor)
    _settle(c, {FRR: tor != FRR, BIRD: tor != BIRD})  # BFD off toward `tor` only
    without = _silence_and_time(c, tor, timeout=20)
    _forget_resets(c, tor)
    print(f"{tor}: routes out in {with_bfd:.3f}s with BFD, {without:.3f}s without (hold time 9 s)")
    assert with_bfd < 1.5, with_bfd
    assert without > 5.0, without  # the hold timer: 9 s from the last KEEPALIVE (sent every 3 s)
    _settle(c, {FRR: True, BIRD: True})


def _engine_pid(c: MeshCluster) -> int:
    for pid in sh("ip", "netns", "pids", c.nodes["n1"]).stdout.split():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"bird") and any(a.endswith(b"/bfd/bird.conf") for a in argv):
            return int(pid)
    raise AssertionError("no BFD engine (bird) in n1's namespace")


def test_the_bfd_process_killed_leaves_bgp_up_and_is_back_within_5s(rack):
    c = rack
    _settle(c, {FRR: True, BIRD: True})
    before = _sessions(c)[BIRD]["since"]
    pid = _engine_pid(c)
    _disturbed(c)
    os.kill(pid, signal.SIGKILL)
    killed_at = time.time()
    wait_for("BFD Up again toward both ToRs, with a new engine",
             lambda: _engine_pid(c) != pid and _bfd_states(c, FRR, BIRD) == ["Up", "Up"], timeout=15,
             interval=0.05)
    events = [json.loads(x) for x in c.cli("events", "--node", "n1", "-o", "json").stdout.splitlines() if x]
    # when each came back, by the agent's own clock (the CLI polling above is slower than that)
    ups = {e["peer"]: e["time"] for e in events if e["kind"] == "bfd_up" and e["time"] >= killed_at}
    assert set(ups) == {FRR, BIRD}, ups
    back = max(ups.values()) - killed_at
    assert back < 5.0, back
    kinds = [e["kind"] for e in events]
    assert "bfd_engine_unavailable" in kinds and "bfd_engine_available" in kinds, kinds[-10:]
    assert not [e for e in events if e["kind"] == "bfd_down" and e["time"] >= killed_at], events[-10:]
    time.sleep(2)
    after = _sessions(c)
    assert after[BIRD]["since"] == before and after[BIRD]["state"] == "Established", after[BIRD]
    # FRR's BGP follows its BFD session, which saw ours go: it ended the session itself (a NOTIFICATION
    # received, not our Cease), and the session is back the normal way
    events = [json.loads(x) for x in c.cli("events", "--node", "n1", "-o", "json").stdout.splitlines() if x]
    downs = [e for e in events if e["kind"] == "session_down" and e["time"] >= killed_at]
    assert downs and all(e["peer"] == FRR for e in downs) and "notification received" in downs[0]["detail"], downs
    wait_for("the FRR session back", lambda: _sessions(c)[FRR]["state"] == "Established", timeout=30)
    print(f"BFD back {back:.2f}s after SIGKILL")


@pytest.mark.parametrize("what, args", [
    # what BIRD logs dropping them (bfd_rx_hook, proto/bfd/packets.c): the engine's checks, not ours
    ("wrong TTL (254)", ["--ttl", "254"]),
    ("version mismatch (0)", ["--version", "0"]),
    ("unknown session id (24301)", ["--your-disc", "0x5eed"]),
], ids=["ttl", "version", "discriminator"])
def test_bfd_packets_with_a_wrong_ttl_version_or_discriminator_do_not_disturb_the_session(rack, what, args):
    c = rack
    _settle(c, {FRR: True, BIRD: True})
    # each says Down, from the BIRD ToR's address: taken, it would end the session
    start = time.time()
    res = sh(sys.executable, "-m", "tests.e2e.bfd_packets", "198.18.0.1", *args, "--count", "100",
             "--interval", "0.01", ns=c.tors[BIRD], timeout=30)
    assert "sent 100" in res.stdout, res
    end = time.time() + 1.0  # and a detection time or three after the last one
    time.sleep(1)
    # judged by the agent's own record of that window (a later stall of this shared machine is no answer)
    events = [json.loads(x) for x in c.cli("events", "--node", "n1", "-o", "json").stdout.splitlines() if x]
    hit = [e for e in events if e["kind"] in ("bfd_down", "session_down") and start <= e["time"] <= end]
    assert not hit, (what, hit)
    wait_for("BFD Up toward both ToRs", lambda: _bfd_states(c, BIRD, FRR) == ["Up", "Up"], timeout=10)
    assert f"Bad packet from {BIRD} - {what}" in c.agents["n1"].tail(3000), what


def test_an_agent_killed_leaves_bfd_running_and_the_next_agent_adopts_it(rack):
    """BFD tracks forwarding, which goes on while an agent restarts: its BIRD outlives the agent, the
    ToRs' BFD sessions never go down (so they keep the node's routes for graceful restart), and the
    restarted agent adopts that BIRD."""
    c = rack
    _settle(c, {FRR: True, BIRD: True})
    pid = _engine_pid(c)
    _disturbed(c)
    c.agents["n1"].kill(group=False)  # the agent alone, as a crash: its ExaBGP dies with it (PDEATHSIG)
    killed, killed_at = time.monotonic(), time.time()
    assert _engine_pid(c) == pid
    c.start_agent("n1")
    wait_for("the new agent's BIRD adopted", lambda: f"event=bfd_engine_adopted pid={pid}" in c.agents["n1"].tail(3000),
             timeout=60)
    wait_for("the new agent's status", lambda: c.status("n1")["started"] > killed_at, timeout=60)
    wait_for("n1 back: sessions Established, BFD Up", lambda: _converged(c, {FRR: True, BIRD: True}), timeout=90)
    assert _engine_pid(c) == pid
    # FRR's BFD session to n1 stayed up throughout
    peers = json.loads(c.frr.vtysh("show bfd peers json"))  # type: ignore[attr-defined]
    mine = next(p for p in peers if p["peer"] == "198.18.0.1")
    assert mine["status"] == "up" and mine["uptime"] > time.monotonic() - killed, mine
