"""The hostile-peer suite: our raw BGP speaker (tests/bgpwire) as an eBGP fabric peer of n1,
beside a second agent (n2, meshed) and a good BIRD ToR; harness in tests/e2e/hostile_peer.py.
Every case asserts what the agent does, that n1's other sessions stay up and that kernel
programming goes on (a new ToR route installed, the previous one withdrawn).

Cases:
- an OPEN and then no KEEPALIVE: n1's ExaBGP waits in OpenConfirm without spinning;
- a bad marker / a bad header length: NOTIFICATION 1/1 / 1/2 back (RFC 4271 6.1), and the reset
  earns the peer an idle hold (session_backoff, shown in the session's info);
- a prefix flapping ~100 times/s with damping off: one prefix_churn event;
- another node's block and a more-specific inside it: refused for their origin (IPAM), 0 ping loss;
- a reset storm (the same malformed UPDATE after every reconnect): at most 10 resets until it is held
  idle a third time (for 20 s), the
  agent's CPU during it printed, and the event ring keeps the other events;
- malformed UPDATEs (RFC 7606): no NEXT_HOP / ORIGIN / AS_PATH, an undefined ORIGIN, an unknown
  well-known attribute, a wrong or missing first AS: treat-as-withdraw, one event per reason; a
  duplicate ORIGIN keeps the first and the route;
- martian prefixes, unusable next hops and our AS inside an AS_SET: never in the kernel.
IPv6 next hops from BIRD and FRR ToRs: tests/e2e/test_ipv6_next_hops.py; memory after 200k rejected
routes: bench/memory.py.
"""
from __future__ import annotations

import re
import shutil
import time

import pytest

from lab.net import Process, sh, wait_for
from tests.bgpwire import message as m
from tests.bgpwire.session import RawSpeaker
from tests.e2e.hostile_peer import HOSTILE, HOSTILE_AS, STORM, STORM_AS, bad_update_resetting_exabgp, hostile_cluster
from tests.marks import needs_root

STORM_ROUTES = 10_000
MOST_RESETS = 10  # before the third hold, with the back-off (606 in 30 s without)

pytestmark = [needs_root,
              pytest.mark.skipif(shutil.which("bird") is None, reason="needs BIRD 2 (./bootstrap.sh setup)"),
              pytest.mark.skipif(shutil.which("etcd") is None, reason="needs etcd (./bootstrap.sh setup)")]


@pytest.fixture(scope="module")
def cluster(etcd_server):
    with hostile_cluster(etcd_server) as h:
        yield h


@pytest.fixture
def hostile(cluster):
    """The harness for one case; afterwards its sessions are closed and the agent made to forget the
    hostile peer's resets (a short session counts as one), so the next case starts clean."""
    yield cluster
    cluster.close_speakers()
    cluster.reset_backoff("hostile")


def _events_of(h, kind: str, peer: str = "", prefix: str = "") -> list[dict]:
    return [e for e in h.events() if e["kind"] == kind and (not peer or e["peer"] == peer)
            and (not prefix or e["prefix"] == prefix)]


def _storm_route(monitor_line: str) -> bool:
    """An `ip monitor route` line about one of the storm's /32s (198.18.128.0 and up, shown bare)."""
    words = monitor_line.split()
    dst = words[1] if words and words[0] == "Deleted" and len(words) > 1 else (words[0] if words else "")
    return dst.startswith("198.18.1") and "/" not in dst


def test_an_open_without_keepalive_does_not_spin_exabgp(hostile):
    h = hostile
    with RawSpeaker.connect(h.c.addrs["n1"], ns=h.ns, source=HOSTILE) as s:
        s.send(m.open_message(HOSTILE_AS, HOSTILE, 90))
        s.read_open()
        s.expect(m.KEEPALIVE)  # n1's ExaBGP waits for ours in OpenConfirm now
        pids = h.c.exabgp_pids("n1")
        c0, t0 = h.cpu_seconds(pids), time.monotonic()
        time.sleep(3)
        share = (h.cpu_seconds(pids) - c0) / (time.monotonic() - t0)
        print(f"n1's ExaBGP with a peer stuck in OpenConfirm: {share:.1%} of a core over 3 s")
        assert share < 0.3, f"ExaBGP used {share:.0%} of a core waiting for a KEEPALIVE"
        assert not s.closed
        h.assert_healthy("n1")


def _held(info: str) -> str | None:
    return info if "held idle" in info else None


@pytest.mark.parametrize("case, bad, code", [
    ("marker", b"\x00" * 16 + b"\x00\x13\x04", (1, 1)),
    ("length", m.raw_header(5, m.KEEPALIVE), (1, 2)),
])
def test_a_bad_header_gets_a_notification_and_an_idle_hold(hostile, case, bad, code):
    h = hostile
    s = h.session()
    s.send(bad)
    note = s.wait_notification(10)
    assert note is not None and (note.code, note.subcode) == code, f"{case}: {note}"
    wait_for("a session_backoff event for the hostile peer", lambda: _events_of(h, "session_backoff", HOSTILE),
             timeout=15)
    # the status is republished shortly after the event: wait for the hold to show there
    info = wait_for("the hold in n1's status", lambda: _held(h.session_state("n1", HOSTILE)["info"]), timeout=10)
    assert "reset for errors (notification sent" in info and "held idle for 5s" in info, info
    h.assert_healthy("n1")


def test_a_flapping_prefix_gives_one_churn_event(hostile):
    h = hostile
    flappy = "198.18.190.0/24"
    s = h.session()
    announce = m.well_formed(HOSTILE, [HOSTILE_AS], [flappy])
    withdraw = m.update(withdrawn=[flappy])
    end = time.monotonic() + 3.0
    sent = 0
    while time.monotonic() < end:  # ~100 changes a second for 3 s, damping off (the default)
        s.send(announce if sent % 2 == 0 else withdraw)
        sent += 1
        time.sleep(0.01)
    s.send(withdraw)
    events = wait_for("a prefix_churn event", lambda: _events_of(h, "prefix_churn", HOSTILE, flappy), timeout=15)
    assert len(events) == 1 and "more than 10 changes within 10s (damping off)" in events[0]["detail"], events
    assert sent > 100
    h.assert_healthy("n1")


def test_a_hijacked_block_and_a_more_specific_are_refused_by_origin(hostile):
    """The raw speaker announces n2's block and the /27 inside it holding n2's workload; validated as
    every peer is by default (originValidation Reject), both are refused with the reason, the mesh
    route stays, and n1's workload reaches n2's with no loss."""
    import ipaddress

    from lab.net import sh
    h = hostile
    c = h.c
    block = next(p for p, hops in c.routes("n2").items() if hops == ["blackhole"])
    more = str(ipaddress.ip_network(f"{c.workloads['n2'][1]}/27", strict=False))
    s = h.session()
    h.announce(s, [block, more])
    reason = f"origin invalid: {block} is n2's block, path originates at AS {HOSTILE_AS}"
    wait_for("both refused for their origin", lambda: {p: r for p, r in h.rejected().items() if p in (block, more)}
             == {block: reason, more: reason}, timeout=30)
    routes = h.kernel()
    assert routes[block] == [c.addrs["n2"]] and more not in routes, routes
    ws, _ = c.workloads["n1"]
    out = sh("ping", "-c", "10", "-i", "0.2", "-W", "1", c.workloads["n2"][1], ns=ws, check=False, timeout=30).stdout
    assert " 0% packet loss" in out, out
    h.assert_healthy("n1")


def test_a_reset_storm_is_held_back(hostile):
    """10,000 routes, then the same malformed UPDATE (an NLRI /33: ExaBGP sends NOTIFICATION 3/10),
    after every reconnect, as fast as the agent lets us, until the back-off has held the peer idle a
    third time, at most 30 s (it used to be: 606 resets, 1.08M kernel route events and 62% of a core in
    30 s without a back-off). The holds are 5, 10 and 20 s: the third starts about 15 s in and lasts
    past the 30 s mark, so storming on until then would only meet refused connections."""
    h = hostile
    bad = bad_update_resetting_exabgp()
    routes = m.updates([m.origin(0), m.as_path([(m.AS_SEQUENCE, [STORM_AS])]), m.next_hop(STORM)],
                       [f"198.18.{128 + i // 256}.{i % 256}/32" for i in range(STORM_ROUTES)])
    monitor = Process(h.c.ledger, h.c.nodes["n1"], ["ip", "monitor", "route"], h.c.run_dir / "logs" / "storm-monitor.log")
    agent, exa = [h.c.agents["n1"].pid], h.c.exabgp_pids("n1")
    a0, e0, t0 = h.cpu_seconds(agent), h.cpu_seconds(exa), time.monotonic()
    resets = attempts = 0
    held_info, looked = "", 0.0
    while time.monotonic() - t0 < 30.0:
        attempts += 1
        try:
            s = RawSpeaker.connect(h.c.addrs["n1"], ns=h.ns, source=STORM, timeout=2)
        except OSError:
            s = None
        try:
            if s is None:
                raise ConnectionRefusedError
            s.establish(STORM_AS, STORM, 90, timeout=2)
        except (OSError, TimeoutError):
            if s is not None:
                s.close()
            if resets and time.monotonic() - looked > 2.0:  # refused: is it the hold?
                looked = time.monotonic()
                if not held_info:
                    info = h.session_state("n1", STORM)["info"]
                    held_info = info if "held idle" in info else ""
                if len(_events_of(h, "session_backoff", STORM)) >= 3:
                    break  # held a third time, for 20 s
            time.sleep(0.05)
            continue
        resets += 1  # Established: the malformed UPDATE resets it (or the hold starting just now does)
        try:
            s.send(b"".join(routes) + bad)
            s.wait_notification(5)
        except OSError:
            pass
        s.close()
    elapsed = time.monotonic() - t0
    agent_cpu = (h.cpu_seconds(agent) - a0) / elapsed
    exa_cpu = (h.cpu_seconds(exa) - e0) / elapsed
    wait_for("the last cycle's routes out of n1's kernel", lambda: not any(
        _storm_route(line) for line in sh("ip", "-4", "route", "show", "proto", "86", ns=h.c.nodes["n1"]).stdout.splitlines()),
        timeout=30)
    monitor.stop()
    kernel_events = sum(1 for line in monitor.log_path.read_text(errors="replace").splitlines()
                        if _storm_route(line))
    print(f"reset storm: {resets} resets in {elapsed:.0f}s ({attempts} connection attempts, {STORM_ROUTES} routes "
          f"each), {kernel_events} kernel route events; n1 agent {agent_cpu:.1%} of a core, its ExaBGP {exa_cpu:.1%}")
    storm = h.session_state("n1", STORM)
    for e in h.events():
        if e["peer"] == STORM:
            print(f"  {e['time']:.1f} {e['kind']} {e['detail']}")
    assert 2 <= resets <= MOST_RESETS, resets
    assert kernel_events <= 2 * STORM_ROUTES * resets, kernel_events
    assert storm["flaps"] <= MOST_RESETS, storm
    assert held_info.startswith("reset for errors (notification sent (3,10)): held idle for "), held_info
    holds = [re.search(r"held idle for (\d+)s", e["detail"]) for e in _events_of(h, "session_backoff", STORM)]
    assert [int(x.group(1)) for x in holds if x][:3] == [5, 10, 20], holds
    kinds = {e["kind"] for e in h.events()}
    assert {"grace_end", "session_up", "session_down", "session_backoff"} <= kinds, kinds
    h.assert_healthy("n1")


# --- RFC 7606, martians, unusable next hops, AS_SET (calico_bgp/routing/malformed.py, martians.py) -------------------
ACCEPTED = "198.18.200.0/24"  # outside the pool: accepted through the filter below (pool space is IPAM's to judge)
HOSTILE_PATH = m.as_path([(m.AS_SEQUENCE, [HOSTILE_AS])])


@pytest.fixture
def accepting(hostile):
    """The hostile peer with a BGPFilter accepting 0.0.0.0/0 and everything in it: whatever it sends
    is refused for what it is, not for lack of a filter. Its plain BGPPeer is back afterwards."""
    h = hostile
    h.c.apply(f"""kind: BGPFilter
apiVersion: projectcalico.org/v3
metadata: {{name: everything}}
spec:
  importV4: [{{action: Accept, cidr: 0.0.0.0/0, matchOperator: In}}]
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {{name: hostile}}
spec: {{node: n1, peerIP: {HOSTILE}, asNumber: {HOSTILE_AS}, filters: [everything]}}
""")
    yield h
    h.c.apply(f"""kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {{name: hostile}}
spec: {{node: n1, peerIP: {HOSTILE}, asNumber: {HOSTILE_AS}, filters: [fabric-space]}}
""")


@pytest.mark.parametrize("case, attributes, reason", [
    ("no NEXT_HOP", [m.origin(0), HOSTILE_PATH], "missing-next-hop"),
    ("no ORIGIN", [HOSTILE_PATH, m.next_hop(HOSTILE)], "missing-origin"),
    ("no AS_PATH", [m.origin(0), m.next_hop(HOSTILE)], "missing-as-path"),
    ("ORIGIN=5", [m.origin(5), HOSTILE_PATH, m.next_hop(HOSTILE)], "invalid-origin"),
    ("unknown well-known", [m.origin(0), HOSTILE_PATH, m.next_hop(HOSTILE), m.attr(m.TRANSITIVE, 99, b"ab")],
     "unrecognized-well-known"),
    ("first AS not the peer's", [m.origin(0), m.as_path([(m.AS_SEQUENCE, [65001, HOSTILE_AS])]),
                                 m.next_hop(HOSTILE)], "first-as-mismatch"),
    ("empty AS_PATH", [m.origin(0), m.as_path([]), m.next_hop(HOSTILE)], "empty-as-path"),
])
def test_a_malformed_update_is_treated_as_withdraw_and_reported_once(accepting, case, attributes, reason):
    """RFC 7606: the route the peer had is withdrawn (not replaced, not kept as rejected), the session
    stays up, one malformed_update event for two such UPDATEs."""
    h = accepting
    s = h.session()
    h.announce(s, [ACCEPTED])
    wait_for(f"{ACCEPTED} from the hostile peer in n1's kernel", lambda: h.kernel().get(ACCEPTED) == [HOSTILE],
             timeout=30)
    h.announce(s, [ACCEPTED], attributes)
    h.announce(s, [ACCEPTED], attributes)
    wait_for(f"{case}: {ACCEPTED} withdrawn", lambda: ACCEPTED not in h.kernel(), timeout=30)
    events = wait_for(f"a malformed_update event ({reason})", lambda: [
        e for e in _events_of(h, "malformed_update", HOSTILE) if e["detail"].startswith(f"{reason}:")], timeout=15)
    assert ACCEPTED not in h.rejected()
    assert not s.closed and h.session_state("n1", HOSTILE)["state"] == "Established"
    h.assert_healthy("n1")
    assert len([e for e in _events_of(h, "malformed_update", HOSTILE) if e["detail"].startswith(f"{reason}:")]) \
        == len(events) == 1


def test_a_duplicate_origin_keeps_the_first_and_the_route(accepting):
    """RFC 7606 3(g): the second ORIGIN is discarded, the route installed, the UPDATE reported."""
    h = accepting
    s = h.session()
    h.announce(s, [ACCEPTED], [m.origin(0), m.origin(2), HOSTILE_PATH, m.next_hop(HOSTILE)])
    wait_for(f"{ACCEPTED} in n1's kernel", lambda: h.kernel().get(ACCEPTED) == [HOSTILE], timeout=30)
    wait_for("a duplicate-attribute event", lambda: [
        e for e in _events_of(h, "malformed_update", HOSTILE) if e["detail"].startswith("duplicate-attribute:")],
        timeout=15)
    h.assert_healthy("n1")


def test_martians_bad_next_hops_and_our_as_in_an_as_set_never_reach_the_kernel(accepting):
    h = accepting
    s = h.session()
    martians = ["127.0.0.0/8", "0.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32"]
    h.announce(s, martians + ["0.0.0.0/0"])
    h.announce(s, ["198.18.201.0/24"], [m.origin(0), HOSTILE_PATH, m.next_hop("127.0.0.1")])
    h.announce(s, ["198.18.202.0/24"], [m.origin(0), HOSTILE_PATH, m.next_hop("198.18.0.1")])
    h.announce(s, ["198.18.203.0/24"], [m.origin(0), m.as_path([(m.AS_SEQUENCE, [HOSTILE_AS]), (m.AS_SET, [64512])]),
                                        m.next_hop(HOSTILE)])
    wait_for("the default route (the filter accepts it) in n1's kernel",
             lambda: h.kernel().get("default/32", h.kernel().get("0.0.0.0/0")) == [HOSTILE], timeout=30)
    rejected = wait_for("everything else rejected", lambda: (lambda r: r if len(r) >= 9 else None)(
        {p: why for p, why in h.rejected().items() if p in martians or p.startswith("198.18.20")}), timeout=30)
    assert all(rejected[p].startswith("martian prefix: inside ") for p in martians), rejected
    assert rejected["198.18.201.0/24"] == "next hop 127.0.0.1 is loopback"
    assert rejected["198.18.202.0/24"] == "next hop 198.18.0.1 is this node's own address"
    assert rejected["198.18.203.0/24"] == "as-path loop"
    kernel = h.kernel()
    assert not (set(martians) | set(rejected)) & set(kernel), kernel
    h.assert_healthy("n1")
