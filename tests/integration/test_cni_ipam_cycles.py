"""200 ADD/DEL cycles of calico-bgp-ipam in parallel, 8 processes across 2 nodes sharing one small
pool (so blocks are claimed, filled and borrowed): no address is ever held by two containers at
once, and nothing is left allocated afterwards (`ipam check` clean)."""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from collections import defaultdict

from tests.integration.cni_ipam_env import ROOT, Cluster

WORKERS, CYCLES, HELD = 8, 25, 3


def test_200_parallel_cycles_on_two_nodes_leak_and_duplicate_nothing(etcd_server, tmp_path):
    cluster = Cluster(etcd_server.url, tmp_path)
    ipam = {"type": "calico-bgp-ipam", "assign_ipv6": "true", "ipv4_pools": ["pool4"], "ipv6_pools": ["pool6"]}
    procs = []
    for w in range(WORKERS):
        node = "n1" if w % 2 else "n2"  # two nodes are two hosts: each its own host-wide lock
        conf = cluster.conf(node, name="cycles", ipam=ipam, ipam_lock_file=str(tmp_path / f"{node}.lock"))
        procs.append(subprocess.Popen([sys.executable, "-m", "tests.integration.cni_ipam_worker", json.dumps(conf),
                                       str(w), str(CYCLES), str(HELD)], cwd=ROOT, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": ROOT}))
    rows = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-2000:]
        rows += [json.loads(line) for line in out.decode().splitlines()]
    assert len(rows) == WORKERS * CYCLES
    spans = defaultdict(list)
    for r in rows:
        assert len(r["ips"]) == 2
        for addr in r["ips"]:
            spans[str(ipaddress.ip_interface(addr).ip)].append((r["added"], r["deleting"], r["container"]))
    overlaps = [(ip, a[2], b[2]) for ip, s in spans.items() for a, b in zip(sorted(s), sorted(s)[1:]) if b[0] < a[1]]
    assert overlaps == [], "an address held by two containers at once"
    assert len(spans) >= WORKERS * (HELD + 1)  # the run held many addresses at once, and re-used some
    assert cluster.addresses() == {}
    report = cluster.check()
    assert report["clean"] and sum(p["inUse"] for p in report["pools"]) == 0
