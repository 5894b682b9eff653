"""Node agents behind a fabric, on the lab's rack (containerlab/rack.clab.yml): FRR and BIRD ToRs
under a GoBGP spine that originates a default route and an external prefix.

ECMP over both ToRs, refusing the spine's routes and a stopped ToR are covered by test_lab.py on the
same topology; this module adds what needs resources changed at run time: a default route only
where a filter allows it, maxPrefixes (warn and teardown), and MD5 with the FRR ToR. The rack's ToRs
run BFD toward every node and FRR keeps a session whose BFD is down from coming up, so a node-specific
BGPPeer added here asks for BFD as the rack's own peers do.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from lab.net import wait_for
from lab.routers import router_for
from lab.runtime import cli, current
from tests.e2e.test_lab import CLAB, running
from tests.e2e.test_lab import pytestmark as lab_marks

pytestmark = lab_marks

TOR1, TOR2 = "198.18.1.1", "198.18.2.1"  # FRR, BIRD


@pytest.fixture(scope="module")
def fabric():
    with running(CLAB / "rack.clab.yml", f"f{os.getpid() % 10000}fab") as r:
        state, topo = current(r.run_dir)
        r.state, r.topo = state, topo
        yield r


def _apply(r, text: str) -> None:
    path = Path(r.run_dir) / f"extra-{time.monotonic_ns()}.yaml"
    path.write_text(text)
    cli(r.state, "apply", "-f", str(path))


def _status(r, node: str) -> dict:
    return json.loads(cli(r.state, "status", "--node", node, "-o", "json"))[0]


def _session(r, node: str, peer: str) -> dict:
    return next(s for s in _status(r, node)["sessions"] if s["peer"] == peer)


def _kernel(r, node: str) -> dict[str, list[str]]:
    import subprocess
    ns = r.state.namespaces[node]
    raw = subprocess.run(["ip", "netns", "exec", ns, "ip", "-j", "-4", "route", "show", "proto", "86"],
                         capture_output=True, text=True).stdout or "[]"
    out = {}
    for x in json.loads(raw):
        dst = "0.0.0.0/0" if x["dst"] == "default" else x["dst"]
        out[dst] = sorted(h["gateway"] for h in x["nexthops"]) if "nexthops" in x else [x.get("gateway", x.get("type", ""))]
    return out


def _frr(r, name: str = "tor1"):
    node = r.topo.nodes[name]
    return router_for(node, r.state.namespaces[name], Path(r.state.run_dir) / "routers" / name)


def test_as_override_paths_are_origin_valid_through_the_fabric_ases(fabric):
    """Origin validation in the rack: every node's block reaches every other node over both ToRs
    (paths 65101 65101 / 65102 65102, the rack's AS overridden), valid because the resources name
    the fabric's ASes (fabricASNumbers); FRR also sends each node its own block back that way, our own
    route, not a claim. Without fabricASNumbers the same paths are origin-invalid."""
    r = fabric
    blocks = {}
    for n in ("n1", "n2", "n3", "n4"):
        blocks[n] = wait_for(f"{n}'s block", lambda n=n: [p for p, h in _kernel(r, n).items() if h == ["blackhole"]],
                             timeout=90)[0]

    def everywhere() -> bool:
        return all(_kernel(r, n).get(blocks[m]) == [TOR1, TOR2] for n in blocks for m in blocks if m != n)

    wait_for("every block over both ToRs", everywhere, timeout=90)
    for n in blocks:
        rejected = json.loads(cli(r.state, "routes", "--node", n, "--rejected", "-o", "json"))[n]
        assert not [x for x in rejected if x["reason"].startswith("origin invalid")], rejected
    config = "kind: BGPConfiguration\napiVersion: projectcalico.org/v3\nmetadata: {name: default}\n" \
             "spec: {asNumber: 64512, nodeToNodeMeshEnabled: false, holdTime: 9s, keepaliveTime: 3s%s}\n"
    try:
        _apply(r, config % "")
        wait_for("n1 refuses n2's block without the fabric ASes", lambda: blocks["n2"] not in _kernel(r, "n1"), timeout=60)
        def reason() -> str:
            return {x["prefix"]: x["reason"] for x in json.loads(
                cli(r.state, "routes", "--node", "n1", "--rejected", "-o", "json"))["n1"]}.get(blocks["n2"], "")

        assert wait_for("the reason in routes --rejected", reason, timeout=30).startswith(
            f"origin invalid: {blocks['n2']} is n2's block, path originates at AS 651")
    finally:
        _apply(r, config % ", fabricASNumbers: [65000, 65101, 65102]")
    wait_for("every block over both ToRs again", everywhere, timeout=90)


def test_default_route_only_where_a_filter_accepts_it(fabric):
    r = fabric
    wait_for("rack converged", lambda: all(s["state"] == "Established" for s in _status(r, "n4")["sessions"]),
             timeout=60)
    _apply(r, """kind: BGPFilter
apiVersion: projectcalico.org/v3
metadata: {name: take-default}
spec:
  importV4: [{action: Accept, cidr: 0.0.0.0/0, matchOperator: Equal}]
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {name: tor1-with-default}
spec: {peerIP: 198.18.1.1, asNumber: 65101, node: n4, filters: [take-default], failureDetectionMode: BFDIfDirectlyConnected}
---
kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {name: tor2-with-default}
spec: {peerIP: 198.18.2.1, asNumber: 65102, node: n4, filters: [take-default], failureDetectionMode: BFDIfDirectlyConnected}
""")
    wait_for("n4 takes the default route over both ToRs",
             lambda: len(_kernel(r, "n4").get("0.0.0.0/0", [])) == 2, timeout=60)
    assert "0.0.0.0/0" not in _kernel(r, "n1")
    rejected = json.loads(cli(r.state, "routes", "--node", "n1", "--rejected", "-o", "json"))["n1"]
    assert {x["prefix"] for x in rejected} >= {"0.0.0.0/0", "198.18.200.0/24"}
    n4 = json.loads(cli(r.state, "routes", "--node", "n4", "--rejected", "-o", "json"))["n4"]
    assert "0.0.0.0/0" not in {x["prefix"] for x in n4} and "198.18.200.0/24" in {x["prefix"] for x in n4}


def test_max_prefixes_warn_then_teardown(fabric):
    r = fabric
    # n1 receives 3 rack blocks + the default + the external prefix from each ToR: 5 > 4
    _apply(r, """kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {name: tor2-limited}
spec: {peerIP: 198.18.2.1, asNumber: 65102, node: n1, maxPrefixes: 4, maxPrefixAction: warn, failureDetectionMode: BFDIfDirectlyConnected}
""")

    def events() -> list[dict]:
        return [json.loads(line) for line in cli(r.state, "events", "--node", "n1", "-o", "json").splitlines() if line]

    wait_for("a max_prefixes warning", lambda: [e for e in events() if e["kind"] == "max_prefixes"], timeout=60)
    assert _session(r, "n1", TOR2)["state"] == "Established"  # warn keeps the session
    _apply(r, """kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {name: tor2-limited}
spec: {peerIP: 198.18.2.1, asNumber: 65102, node: n1, maxPrefixes: 4, maxPrefixAction: teardown, failureDetectionMode: BFDIfDirectlyConnected}
""")
    wait_for("the session torn down and held down",
             lambda: "max prefixes exceeded" in _session(r, "n1", TOR2)["info"], timeout=60)
    assert _session(r, "n1", TOR2)["state"] != "Established"
    # traffic keeps flowing over the other ToR: n1's routes to the rack drop to a single next hop
    learned = {p: h for p, h in _kernel(r, "n1").items() if h != ["blackhole"]}
    assert learned and all(h == [TOR1] for h in learned.values()), learned
    cli(r.state, "delete", "bgppeer", "tor2-limited")


def test_md5_with_frr(fabric):
    r = fabric
    frr = _frr(r)
    secret = Path(r.run_dir) / "tor1.md5"
    secret.write_text("rack-secret\n")
    frr.vtysh("configure terminal", "router bgp 65101", "neighbor 198.18.1.12 password rack-secret")
    _apply(r, f"""kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {{name: tor1-md5}}
spec: {{peerIP: 198.18.1.1, asNumber: 65101, node: n2, password: {{file: {secret}}}, failureDetectionMode: BFDIfDirectlyConnected}}
""")
    wait_for("the MD5 session with FRR Established",
             lambda: _session(r, "n2", TOR1)["state"] == "Established", timeout=90)
    assert "198.18.1.12" in frr.vtysh("show bgp summary") and "Established" in frr.vtysh("show bgp neighbors 198.18.1.12")
    secret.write_text("wrong-secret\n")
    _apply(r, f"""kind: BGPPeer
apiVersion: projectcalico.org/v3
metadata: {{name: tor1-md5}}
spec: {{peerIP: 198.18.1.1, asNumber: 65101, node: n2, password: {{file: {secret}}}, holdTime: 9s, failureDetectionMode: BFDIfDirectlyConnected}}
""")
    wait_for("a wrong password keeps the session down",
             lambda: _session(r, "n2", TOR1)["state"] != "Established", timeout=60)
    time.sleep(5)
    s = _session(r, "n2", TOR1)
    assert s["state"] != "Established" and "MD5" in s["info"], s
