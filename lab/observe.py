"""Reading a running lab: agent statuses from etcd, kernel routes per namespace, router sessions, pings.

The I/O half of `lab status` / `lab check`; lab.expectations decides over what this returns.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import time
from pathlib import Path
from typing import Any

import trio

from lab.clab import Topology
from lab.expectations import AgentView, PingResult, RouterView, SessionView
from lab.net import sh
from lab.routers import router_for
from lab.state import LabState

PROTO = 86          # the dataplane's protocol number for our routes
STALE_AFTER = 30.0  # seconds without a status update


def agent_statuses(state: LabState) -> dict[str, dict[str, Any]]:
    """Node name -> its published status document (as `calico-bgp status -o json` prints it)."""
    from calico_bgp.agent import status as st
    from calico_bgp.datastore import EtcdClient, Keys
    from calico_bgp.datastore.keys import DEFAULT_PREFIX

    async def read() -> dict[str, dict[str, Any]]:
        keys = Keys(DEFAULT_PREFIX)
        out = {}
        with trio.fail_after(10):
            async with EtcdClient([state.etcd.url]) as client:
                for kv in (await client.range(keys.statuses())).kvs:
                    try:
                        s = st.decode(kv.value, kv.key)
                    except ValueError:
                        continue
                    out[s.node] = st.as_json(s)
        return out

    try:
        return trio.run(read)
    except Exception:  # noqa: BLE001 - etcd down: no statuses, the checks say so
        return {}


def kernel_routes(ns: str) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for fam in ("-4", "-6"):
        res = sh("ip", "-j", fam, "route", "show", "proto", str(PROTO), ns=ns, check=False)
        for r in json.loads(res.stdout or "[]"):
            dst = r["dst"] if "/" in r["dst"] else r["dst"] + ("/128" if ":" in r["dst"] else "/32")
            if r.get("type") == "blackhole":
                out[dst] = ("blackhole",)
            elif "nexthops" in r:
                out[dst] = tuple(sorted(h.get("gateway", h.get("dev", "")) for h in r["nexthops"]))
            else:
                out[dst] = (r.get("gateway", r.get("dev", "")),)
    return out


def agent_name(state: LabState, node: str) -> str:
    argv = list(state.agents[node].argv)
    return argv[argv.index("--name") + 1]


def agents(state: LabState, statuses: dict[str, dict[str, Any]] | None = None) -> list[AgentView]:
    statuses = agent_statuses(state) if statuses is None else statuses
    now = time.time()
    out = []
    for node in state.agents:
        name = agent_name(state, node)
        doc = statuses.get(name)
        kernel = kernel_routes(state.namespaces[node])
        if doc is None:
            out.append(AgentView(node=node, name=name, kernel=kernel))
            continue
        sessions = tuple(SessionView(peer=s["peer"], state=s["state"], peer_node=s.get("peerNode", ""),
                                     peer_type=s.get("peerType", ""), since=float(s.get("since", 0) or 0),
                                     flaps=int(s.get("flaps", 0) or 0), peer_name=s.get("peerName", ""))
                         for s in doc.get("sessions", []))
        out.append(AgentView(node=node, name=name, address=str(doc.get("address", "")).split("/")[0],
                             published=True, fresh=now - float(doc.get("updated", 0)) < STALE_AFTER,
                             started=float(doc.get("started", 0) or 0), in_grace=bool(doc.get("inGrace")), version=str(doc.get("version", "")),
                             role=str(doc.get("role", "")),
                             sessions=sessions, routes_total=int(doc.get("routesTotal", 0)),
                             rejected=len(doc.get("rejected", [])), kernel=kernel))
    return out


def routers(state: LabState, topo: Topology) -> list[RouterView]:
    out = []
    for node in state.routers:
        r = router_for(topo.nodes[node], state.namespaces[node], Path(state.run_dir) / "routers" / node)
        alive = all(_alive(p) for p in state.routers[node])
        sessions = tuple(SessionView(peer=s.peer, state=s.state) for s in r.sessions()) if alive else ()
        out.append(RouterView(node=node, kind=r.kind, version=r.version() if alive else "", sessions=sessions,
                              alive=alive))
    return out


def router_prefixes(state: LabState, topo: Topology) -> dict[str, dict[str, int]]:
    out = {}
    for node in state.routers:
        r = router_for(topo.nodes[node], state.namespaces[node], Path(state.run_dir) / "routers" / node)
        out[node] = {s.peer: s.prefixes for s in r.sessions()} if all(_alive(p) for p in state.routers[node]) else {}
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def ping(ns: str, ip: str, timeout: float = 1.0) -> bool:
    return sh("ping", "-c", "1", "-W", str(timeout), "-q", ip, ns=ns, check=False, timeout=timeout + 10).returncode == 0


def ping_all(state: LabState) -> list[PingResult]:
    pairs = [(a, b) for a in state.workloads for b in state.workloads if a != b]
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        oks = list(pool.map(lambda p: ping(state.workloads[p[0]].ns, state.workloads[p[1]].ip), pairs))
    return [PingResult(a, b, ok) for (a, b), ok in zip(pairs, oks)]


def namespace_addresses(ns: str) -> set[str]:
    res = sh("ip", "-j", "addr", "show", ns=ns, check=False)
    out = set()
    for link in json.loads(res.stdout or "[]"):
        for a in link.get("addr_info", []):
            out.add(a["local"])
    return out
