"""`calico-bgp status` and `routes` read what an agent published (real etcd): the counts say what is
learned, in the kernel and failed, `routes --failed` gives each failure's reason, `routes --rejected`
the rejected paths beyond the per-peer cap; a document written before these fields still reads."""
from __future__ import annotations

import json

import trio

from calico_bgp.agent import status as st
from calico_bgp.datastore import EtcdClient, Keys


def publish(etcd_url: str, key_prefix: str, raw: bytes, node: str = "n1") -> None:
    async def go():
        async with EtcdClient([etcd_url]) as c:
            await c.put(Keys(key_prefix).status(node), raw)
    trio.run(go)


def status(**kw) -> st.NodeStatus:
    return st.NodeStatus(node="n1", version="0.1.0", address="198.18.0.1", asn=64512, router_id="198.18.0.1",
                         role="node", updated=1e10, started=1e10 - 60, **kw)


def test_status_counts_learned_installed_and_failed_and_routes_failed_gives_the_reasons(cli, etcd_url, key_prefix):
    failed = (st.FailedRoute("198.19.64.0/26", "build", "gateway='no-nexthop': not an address"),
              st.FailedRoute("198.19.65.0/26", "kernel", "ENETUNREACH Network is unreachable", attempts=4))
    session = st.SessionStatus(peer="198.18.0.254", peer_type="global", state="Established", received=10_041,
                               accepted=41, rejected=10_000 + 500, rejected_not_kept=500)
    doc = status(sessions=(session,), routes_total=41, kernel_routes=32 + 7, routes_failed=2, failed=failed,
                 rejected=tuple(st.RejectedRoute("198.18.0.254", f"2001:db8:ff::{i:x}/128", "outside every pool")
                                for i in range(3)))
    publish(etcd_url, key_prefix, st.encode(doc))

    r = cli("status")
    assert r.exit_code == 0, r.output
    assert "41 learned routes, 39 in kernel, 2 failed (calico-bgp routes --failed)" in r.output

    r = cli("routes", "--failed")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == "Node n1: 2 failed"
    assert lines[2].split()[:3] == ["198.19.64.0/26", "build", "1"] and "no-nexthop" in lines[2]
    assert lines[3].split()[:3] == ["198.19.65.0/26", "kernel", "4"] and "ENETUNREACH" in lines[3]
    r = cli("routes", "--failed", "-o", "json")
    assert [f["reason"] for f in json.loads(r.output)["n1"]][1] == "ENETUNREACH Network is unreachable"

    r = cli("routes", "--rejected")
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[0] == "Node n1: 10500 rejected (showing 3); 500 beyond the per-peer cap counted, not kept"


def test_a_status_document_from_before_the_failure_fields_still_reads(cli, etcd_url, key_prefix):
    old = {"node": "n1", "version": "0.1.0", "address": "198.18.0.1", "asn": 64512, "routerId": "198.18.0.1",
           "role": "node", "updated": 1e10, "started": 1e10 - 60, "routesTotal": 5, "kernelRoutes": 5,
           "sessions": [{"peer": "198.18.0.254", "peerType": "global", "state": "Established", "received": 5,
                         "accepted": 5}]}
    publish(etcd_url, key_prefix, json.dumps(old).encode())
    r = cli("status")
    assert r.exit_code == 0, r.output
    assert "5 learned routes, 5 in kernel" in r.output and "failed" not in r.output
    r = cli("routes", "--failed")
    assert r.exit_code == 0 and r.output.splitlines()[0] == "Node n1: 0 failed"
    # and a document without failures carries no new key: an older CLI reads it too
    assert b"routesFailed" not in st.encode(status(routes_total=5, kernel_routes=5))
