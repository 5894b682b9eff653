"""Peer stability and damping: a BIRD ToR flaps the session N times and one prefix M times; the node's
metrics (scraped from its --metrics-port, parsed as Prometheus text) and its event log match N and
M exactly; with short damping parameters the prefix is suppressed at the k-th flap, reused after
decay, and the kernel (watched with `ip monitor route` in the node's namespace) saw no change of
that prefix while it was suppressed.
"""
from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import attrs
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lab.bird import Bird, BirdPeer
from lab.cluster import MeshCluster
from lab.net import Process, sh, wait_for
from tests.marks import needs_root

pytestmark = [needs_root,
              pytest.mark.skipif(shutil.which("bird") is None, reason="needs BIRD 2 (./bootstrap.sh setup)"),
              pytest.mark.skipif(shutil.which("etcd") is None, reason="needs etcd (./bootstrap.sh setup)"),
              pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl to scrape the metrics port")]

NODE_AS, TOR_AS = 64512, 65001
TOR = "198.18.0.50"
FLAPPY, STABLE = "198.19.200.0/24", "198.19.201.0/24"
PORT = 9187
N_SESSION_FLAPS = 3
M_PREFIX_FLAPS = 4
# damping: halfLife 5 s, every withdrawal adds 1000; suppress 2200 is crossed on the 3rd quick flap
# (1000 + 1000*d + 1000*d^2 > 2200 while flaps are < ~2 s apart), never on the 2nd (at most 2000)
DAMPING = {"halfLife": 5, "suppress": 2200, "reuse": 800, "maxSuppress": 30}
SUPPRESS_AT = 3
DAMPED_FLAPS = 5  # flaps of the prefix in the damping test; the last two while suppressed

RESOURCES = f"""
kind: BGPConfiguration
apiVersion: projectcalico.org/v3
metadata: {{name: default}}
spec: {{asNumber: {NODE_AS}, nodeToNodeMeshEnabled: true}}
---
kind: IPPool
apiVersion: projectcalico.org/v3
metadata: {{name: pods}}
spec: {{cidr: 198.19.0.0/16, blockSize: 26}}
---
kind: Node
apiVersion: projectcalico.org/v3
metadata: {{name: n1}}
spec: {{bgp: {{ipv4Address: 198.18.0.1/24}}}}
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {{name: tor}}
spec: {{node: n1, peerIP: {TOR}, asNumber: {TOR_AS}, originValidation: Disabled}}
"""
# originValidation Disabled: the ToR's prefixes are in the pool but in no block (origin-invalid by IPAM);
# this module is about stability and damping, test_origin_validation.py about origins

# the metrics an operator's dashboards and alerts read, by exposition name (a Counter family `x_total` shows as `x_total` samples)
ISSUE_METRICS = (
    "calico_bgp_peer_session_state", "calico_bgp_peer_established_seconds", "calico_bgp_peer_transitions_total",
    "calico_bgp_peer_flaps_total", "calico_bgp_peer_flap_score",
    "calico_bgp_peer_updates_received_total", "calico_bgp_peer_withdrawals_received_total",
    "calico_bgp_peer_prefixes", "calico_bgp_kernel_routes", "calico_bgp_route_programming_seconds_bucket",
    "calico_bgp_route_programming_seconds_count", "calico_bgp_reconcile_runs_total",
    "calico_bgp_reconcile_changes_total", "calico_bgp_damped_prefixes", "calico_bgp_ipam_pool_utilisation_ratio",
    "calico_bgp_ipam_pool_blocks", "calico_bgp_ipam_borrowed_addresses")


@attrs.define
class Tor:
    c: MeshCluster
    bird: Bird
    monitor_log: Path
    peer_labels: dict[str, str] = attrs.field(factory=lambda: {"peer": TOR, "peer_type": "fabric"})

    # ------------------------------------------------------------ node side
    def scrape(self) -> dict[tuple[str, frozenset], float]:
        """The node's /metrics, fetched from inside its namespace; must parse as Prometheus text."""
        raw = sh("curl", "-sf", "--max-time", "5", f"http://127.0.0.1:{PORT}/metrics", ns=self.c.nodes["n1"]).stdout
        out = {}
        for family in text_string_to_metric_families(raw):
            for s in family.samples:
                out[(s.name, frozenset(s.labels.items()))] = s.value
        return out

    def peer_metric(self, m: dict, name: str, **extra: str) -> float:
        return m.get((name, frozenset({**self.peer_labels, **extra}.items())), 0.0)

    def events(self) -> list[dict]:
        out = self.c.cli("events", "--node", "n1", "-o", "json").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def kernel(self) -> dict[str, list[str]]:
        return self.c.routes("n1")

    def established(self) -> bool:
        m = self.scrape()
        return (self.peer_metric(m, "calico_bgp_peer_session_state", state="established") == 1
                and self.bird.established("n1"))

    def kernel_changes(self, prefix: str, since: float = 0.0, until: float = float("inf")) -> list[tuple[float, str]]:
        """(wall time, 'add'|'del') of every netlink change to `prefix` that `ip -ts monitor route` saw."""
        out = []
        for line in self.monitor_log.read_text(errors="replace").splitlines():
            if not line.startswith("[") or "]" not in line:
                continue
            stamp, rest = line[1:].split("]", 1)
            rest = rest.strip()
            kind = "del" if rest.startswith("Deleted ") else "add"
            dst = rest.split()[1] if kind == "del" else rest.split()[0]
            if dst != prefix:
                continue
            t = datetime.datetime.fromisoformat(stamp).timestamp()
            if since <= t <= until:
                out.append((t, kind))
        return out

    # ------------------------------------------------------------ ToR side
    def announce(self, flappy: bool) -> None:
        self.bird.configure(static4=[FLAPPY, STABLE] if flappy else [STABLE])

    def flap_counted(self, i: int, w0: float, u0: float) -> None:
        """Withdraw and re-announce FLAPPY, each seen by the node: its i-th since the counters were w0, u0."""
        self.announce(False)
        wait_for(f"withdrawal {i} counted", lambda: self.peer_metric(
            self.scrape(), "calico_bgp_peer_withdrawals_received_total") == w0 + i, timeout=15, interval=0.05)
        self.announce(True)
        wait_for(f"announcement {i} counted", lambda: self.peer_metric(
            self.scrape(), "calico_bgp_peer_updates_received_total") == u0 + i, timeout=15, interval=0.05)


@pytest.fixture(scope="module")
def tor(etcd_server):
    run_dir = Path(tempfile.mkdtemp(prefix="calico-bgp-stab-"))
    c = MeshCluster(run_dir, etcd_server, f"/stab{os.getpid()}/calico-bgp/v1", f"cbs{os.getpid() % 1000}")
    bird = None
    try:
        c.apply(RESOURCES)
        ns = c.add_node("n1", 1)
        monitor_log = run_dir / "logs" / "ip-monitor.log"
        Process(c.ledger, ns, ["ip", "-ts", "monitor", "route"], monitor_log)  # the ledger stops it
        c.start_agent("n1", "--metrics-port", str(PORT), "--log-level", "info")
        tor_ns = c.add_node("tor", 50)
        bird = Bird(tor_ns, router_id=TOR, tmp=run_dir / "bird")
        bird.configure([BirdPeer(name="n1", local_as=TOR_AS, neighbor="198.18.0.1", peer_as=NODE_AS,
                                 local_address=TOR)], static4=[FLAPPY, STABLE])
        t = Tor(c, bird, monitor_log)
        wait_for("session with the ToR", t.established, timeout=60)
        wait_for("ToR prefixes in the kernel", lambda: {FLAPPY, STABLE} <= set(t.kernel()), timeout=30)
        yield t
    except BaseException:
        print(c.logs())
        raise
    finally:
        if bird is not None:
            bird.stop()
        c.teardown()
        shutil.rmtree(run_dir, ignore_errors=True)


def _count(events: list[dict], kind: str, **match: str) -> int:
    return sum(1 for e in events if e["kind"] == kind and all(e.get(k) == v for k, v in match.items()))


def test_metrics_endpoint_parses_with_the_issue_names(tor):
    def missing() -> list[str]:
        names = {name for name, _ in tor.scrape()}
        return [n for n in ISSUE_METRICS if n not in names]

    # the gauges of a peer are refreshed with its status (every 2 s at most)
    wait_for("every metric the dashboards read", lambda: not missing(), timeout=5)
    wait_for("accepted prefixes gauge", lambda: tor.peer_metric(tor.scrape(), "calico_bgp_peer_prefixes",
                                                                 kind="accepted") == 2, timeout=5)
    wait_for("kernel routes gauge", lambda: tor.scrape()[("calico_bgp_kernel_routes", frozenset({("kind", "unicast")}))]
             == 2, timeout=5)
    m = tor.scrape()
    names = {name for name, _ in m}
    assert m[("calico_bgp_route_programming_seconds_count", frozenset())] >= 1
    assert all(n.startswith("calico_bgp_") for n in names if not n.startswith(("python_", "process_")))


def test_a_peer_that_never_came_up_is_visible_as_down(tor):
    c = tor.c
    ghost = {"peer": "198.18.0.99", "peer_type": "fabric"}  # nobody answers there
    c.apply(f"""kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {{name: ghost}}
spec: {{node: n1, peerIP: {ghost['peer']}, asNumber: {TOR_AS}}}""")
    try:
        def state(m: dict, s: str) -> float | None:
            return m.get(("calico_bgp_peer_session_state", frozenset({**ghost, "state": s}.items())))

        m = wait_for("the ghost's state series", lambda: (lambda m: m if state(m, "established") is not None else None)(
            tor.scrape()), timeout=10)
        assert state(m, "established") == 0
        assert m[("calico_bgp_peer_flaps_total", frozenset(ghost.items()))] == 0  # exists from the start, at 0
    finally:
        c.cli("delete", "bgppeer", "ghost")
    wait_for("the ghost's series gone", lambda: ("calico_bgp_peer_flaps_total", frozenset(ghost.items()))
             not in tor.scrape(), timeout=10)
    assert tor.established()


def test_session_and_prefix_flaps_counted_exactly(tor):
    c, bird = tor.c, tor.bird
    before, ev_before, t0 = tor.scrape(), tor.events(), time.time()
    for i in range(1, N_SESSION_FLAPS + 1):
        bird.birdc("disable", "n1")
        wait_for(f"flap {i} counted", lambda i=i: tor.peer_metric(tor.scrape(), "calico_bgp_peer_flaps_total")
                 == tor.peer_metric(before, "calico_bgp_peer_flaps_total") + i, timeout=30)
        wait_for("routes gone with the session", lambda: FLAPPY not in tor.kernel(), timeout=15)
        bird.birdc("enable", "n1")
        wait_for("session back", tor.established, timeout=60)
        wait_for("routes back", lambda: {FLAPPY, STABLE} <= set(tor.kernel()), timeout=30)
    w0 = tor.peer_metric(tor.scrape(), "calico_bgp_peer_withdrawals_received_total")
    for i in range(1, M_PREFIX_FLAPS + 1):
        tor.announce(False)
        wait_for(f"withdrawal {i} counted", lambda i=i: tor.peer_metric(
            tor.scrape(), "calico_bgp_peer_withdrawals_received_total") == w0 + i, timeout=15)
        wait_for("prefix out of the kernel", lambda: FLAPPY not in tor.kernel(), timeout=15)
        tor.announce(True)
        wait_for("prefix back in the kernel", lambda: FLAPPY in tor.kernel(), timeout=15)
    time.sleep(1.0)  # let the event writer flush and the monitor catch up
    after, events = tor.scrape(), tor.events()
    new = events[len(ev_before):]
    assert [e["seq"] for e in events[:len(ev_before)]] == [e["seq"] for e in ev_before]

    def delta(name: str, **kw: str) -> float:
        return tor.peer_metric(after, name, **kw) - tor.peer_metric(before, name, **kw)

    assert delta("calico_bgp_peer_flaps_total") == N_SESSION_FLAPS
    assert delta("calico_bgp_peer_withdrawals_received_total") == M_PREFIX_FLAPS
    # each session start re-sends both prefixes; each prefix flap re-announces one
    assert delta("calico_bgp_peer_updates_received_total") == 2 * N_SESSION_FLAPS + M_PREFIX_FLAPS
    assert delta("calico_bgp_peer_transitions_total") >= 2 * N_SESSION_FLAPS
    notes = {dict(labels).get("code"): v for (name, labels), v in after.items()
             if name == "calico_bgp_peer_notifications_total" and ("peer", TOR) in labels}
    assert notes, "BIRD's Cease on `disable` is counted by code"
    assert tor.peer_metric(after, "calico_bgp_peer_flap_score") > tor.peer_metric(before, "calico_bgp_peer_flap_score")
    assert _count(new, "session_down", peer=TOR) == N_SESSION_FLAPS, new
    assert _count(new, "session_up", peer=TOR) == N_SESSION_FLAPS, new
    assert _count(new, "damping_start") == 0 and _count(new, "damping_end") == 0  # damping is off by default
    assert _count(events, "session_up", peer=TOR) == N_SESSION_FLAPS + 1  # and the first one
    sess = {s["peer"]: s for s in c.status("n1")["sessions"]}[TOR]
    assert sess["flaps"] == N_SESSION_FLAPS and sess["state"] == "Established"
    assert 0 < sess["uptime"] < time.time() - t0 and sess["churnRate"] > 0, sess
    table = c.cli("status", "--node", "n1").stdout
    header, row = next((lines[i - 1], line) for lines in [table.splitlines()] for i, line in enumerate(lines)
                       if line.startswith(TOR))
    assert header.split()[-4:] == ["FLAPS", "UPTIME", "CHURN", "BFD"], table
    assert row.split()[-4] == str(N_SESSION_FLAPS) and row.split()[-1] == "-", table  # no BFD toward this ToR
    # without damping the kernel follows every flap: session flaps move both prefixes, prefix flaps one
    flappy = tor.kernel_changes(FLAPPY, since=t0)
    stable = tor.kernel_changes(STABLE, since=t0)
    n, m = N_SESSION_FLAPS, M_PREFIX_FLAPS
    assert [k for _, k in flappy] == ["del", "add"] * (n + m), flappy
    assert [k for _, k in stable] == ["del", "add"] * n, stable


def _damping_on(c: MeshCluster) -> None:
    """The module's resources with damping on (DAMPING's short parameters)."""
    c.apply(RESOURCES.replace("nodeToNodeMeshEnabled: true}",
                              "nodeToNodeMeshEnabled: true, damping: {enabled: true, "
                              + ", ".join(f"{k}: {v}" for k, v in DAMPING.items()) + "}}", 1))
    time.sleep(1.0)  # the agent picks the configuration up from its watch


def test_damping_suppresses_then_reuses_without_kernel_churn(tor):
    c = tor.c
    _damping_on(c)
    before, ev_before, t0 = tor.scrape(), tor.events(), time.time()
    w0 = tor.peer_metric(before, "calico_bgp_peer_withdrawals_received_total")
    u0 = tor.peer_metric(before, "calico_bgp_peer_updates_received_total")
    for i in range(1, DAMPED_FLAPS + 1):
        tor.flap_counted(i, w0, u0)
        if i < SUPPRESS_AT:
            wait_for("prefix back in the kernel", lambda: FLAPPY in tor.kernel(), timeout=15, interval=0.05)
    # suppressed: visible in `routes --damped`, out of the kernel, the stable prefix untouched
    # (the status document is refreshed a few times a second: wait for the one after the last flap)
    damped = wait_for("damped in status with every flap", lambda: [d for d in json.loads(
        c.cli("routes", "--damped", "--node", "n1", "-o", "json").stdout)["n1"] if d["flaps"] == DAMPED_FLAPS],
        timeout=5)
    assert [(d["prefix"], d["peer"]) for d in damped] == [(FLAPPY, TOR)], damped
    assert damped[0]["penalty"] > DAMPING["reuse"] and damped[0]["reuseIn"] > 0, damped
    assert FLAPPY not in tor.kernel() and STABLE in tor.kernel()
    wait_for("damped gauge", lambda: tor.scrape()[("calico_bgp_damped_prefixes", frozenset())] == 1, timeout=5)
    m = tor.scrape()
    assert tor.peer_metric(m, "calico_bgp_peer_prefixes", kind="damped") == 1
    # reused after decay, without another flap
    end = wait_for("prefix reused", lambda: [e for e in tor.events() if e["kind"] == "damping_end"], timeout=60)
    wait_for("reused prefix in the kernel", lambda: FLAPPY in tor.kernel(), timeout=10)
    time.sleep(1.0)
    after, events = tor.scrape(), tor.events()
    new = events[len(ev_before):]
    starts = [e for e in new if e["kind"] == "damping_start"]
    ends = [e for e in new if e["kind"] == "damping_end"]
    assert [(e["peer"], e["prefix"]) for e in starts] == [(TOR, FLAPPY)], new
    assert [(e["peer"], e["prefix"]) for e in ends] == [(TOR, FLAPPY)], new
    assert end[0]["seq"] == ends[0]["seq"]
    t_start, t_end = starts[0]["time"], ends[0]["time"]
    assert t_end - t_start > DAMPING["halfLife"]  # it waited for the penalty to decay

    assert after[("calico_bgp_damping_events_total", frozenset({("event", "suppress")}))] == 1
    assert after[("calico_bgp_damping_events_total", frozenset({("event", "reuse")}))] == 1
    assert tor.peer_metric(after, "calico_bgp_peer_withdrawals_received_total") - w0 == DAMPED_FLAPS
    assert tor.peer_metric(after, "calico_bgp_peer_updates_received_total") - u0 == DAMPED_FLAPS
    assert after[("calico_bgp_damped_prefixes", frozenset())] == 0
    assert json.loads(c.cli("routes", "--damped", "--node", "n1", "-o", "json").stdout)["n1"] == []

    # the kernel: one del/add per flap before the threshold, the del of the suppressing withdrawal,
    # then nothing at all until the reuse put it back
    changes = tor.kernel_changes(FLAPPY, since=t0)
    assert [k for _, k in changes] == ["del", "add"] * (SUPPRESS_AT - 1) + ["del", "add"], changes
    last_del, reuse_add = changes[-2][0], changes[-1][0]
    assert last_del <= t_start + 1.0, (changes, t_start)
    assert reuse_add >= t_end - 0.05, (changes, t_end)
    assert not tor.kernel_changes(FLAPPY, since=last_del + 1e-6, until=reuse_add - 1e-6)
    assert not tor.kernel_changes(STABLE, since=t0)


def test_turning_damping_off_releases_what_it_suppressed(tor):
    c = tor.c
    _damping_on(c)  # on already after the damping test; this case sets it up itself
    m = tor.scrape()
    w0 = tor.peer_metric(m, "calico_bgp_peer_withdrawals_received_total")
    u0 = tor.peer_metric(m, "calico_bgp_peer_updates_received_total")
    ends0 = _count(tor.events(), "damping_end")

    def damped() -> list:
        return json.loads(c.cli("routes", "--damped", "--node", "n1", "-o", "json").stdout)["n1"]

    # flap until suppressed (what is left of an earlier flap's penalty may make it sooner than 3)
    for i in range(1, SUPPRESS_AT + 1):
        tor.flap_counted(i, w0, u0)
    wait_for("suppressed", damped, timeout=5)
    assert FLAPPY not in tor.kernel()
    t = time.monotonic()
    c.apply(RESOURCES)  # damping back off (the default): released now, not after the decay
    wait_for("released", lambda: FLAPPY in tor.kernel(), timeout=5, interval=0.05)
    assert time.monotonic() - t < DAMPING["halfLife"]
    wait_for("damping_end event", lambda: _count(tor.events(), "damping_end") == ends0 + 1, timeout=5)
    assert damped() == []


def test_a_tor_that_only_knows_graceful_restart_loses_its_routes_when_it_dies(tor):
    """BIRD's default `graceful restart aware` advertises the capability with no address family: it
    keeps no forwarding state when it dies, so its routes must go with the session (RFC 4724 keeps
    only the families listed), not stay for its 120 s restart time, blackholing what it carried."""
    assert {FLAPPY, STABLE} <= set(tor.kernel())
    os.kill(tor.bird.pid(), 9)  # a crash: no NOTIFICATION
    wait_for("the dead ToR's routes out of the kernel", lambda: not {FLAPPY, STABLE} & set(tor.kernel()), timeout=20)
    assert not [e for e in tor.events() if e["kind"] == "graceful_restart"], "kept as if the ToR were restarting"
    tor.bird.started = False
    tor.bird.start()  # back for the module's teardown
    wait_for("session back", tor.established, timeout=60)
