"""What `lab check` decides, from observed values. Pure: the observation is done by lab.observe.

Expectations, for every pair of agent nodes N != M and every block B that M announces (a blackhole
route of ours in M's kernel):
- N has B in its kernel;
- when N has node-to-node sessions (mesh, route reflection), the next hop is M's own address (the
  originating node, never a reflector);
- otherwise N learns B through the fabric, over as many distinct next hops as it has fabric
  sessions Established (ECMP: two ToRs -> two next hops; a ToR may pass on a third-party next hop
  on a shared link instead of its own address, so only the width is fixed).
Every agent session and every fabric router session is Established, and every workload pings every
other workload.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import attrs


@attrs.frozen
class SessionView:
    peer: str
    state: str
    peer_node: str = ""
    peer_type: str = ""
    since: float = 0.0
    flaps: int = 0
    peer_name: str = ""


@attrs.frozen
class AgentView:
    node: str                                   # topology node
    name: str                                   # the Node resource
    address: str = ""                           # BGP address without length
    published: bool = False
    fresh: bool = False
    started: float = 0.0                        # wall clock the publishing agent started
    in_grace: bool = False
    version: str = ""
    role: str = ""
    sessions: tuple[SessionView, ...] = ()
    routes_total: int = 0
    rejected: int = 0
    kernel: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)   # prefix -> gateways ("blackhole")

    @property
    def blocks(self) -> list[str]:
        return sorted(p for p, hops in self.kernel.items() if hops == ("blackhole",))

    def node_to_node(self) -> bool:
        return any(s.peer_node for s in self.sessions)

    def fabric_next_hops(self) -> tuple[str, ...]:
        return tuple(sorted((s.peer for s in self.sessions if not s.peer_node and s.state == "Established"),
                            key=_addr_key))


@attrs.frozen
class RouterView:
    node: str
    kind: str
    version: str = ""
    sessions: tuple[SessionView, ...] = ()
    alive: bool = True


@attrs.frozen
class PingResult:
    src: str
    dst: str
    ok: bool


@attrs.frozen
class CheckItem:
    what: str
    ok: bool
    detail: str = ""


@attrs.frozen
class CheckReport:
    items: tuple[CheckItem, ...]

    @property
    def ok(self) -> bool:
        return all(i.ok for i in self.items)

    def failures(self) -> list[CheckItem]:
        return [i for i in self.items if not i.ok]


def _addr_key(a: str) -> tuple[int, str]:
    import ipaddress
    try:
        ip = ipaddress.ip_address(a)
        return (ip.version, f"{int(ip):040d}")
    except ValueError:
        return (9, a)


def expected_next_hops(n: AgentView, m: AgentView) -> tuple[str, ...]:
    if n.node_to_node():
        return (m.address,)
    return n.fabric_next_hops()


def sessions_items(agents: Sequence[AgentView], routers: Sequence[RouterView]) -> list[CheckItem]:
    out = []
    for a in agents:
        if not a.published:
            out.append(CheckItem(f"{a.node} sessions", False, "no status in etcd (agent not running?)"))
            continue
        down = [f"{s.peer} {s.state}" for s in a.sessions if s.state != "Established"]
        if not a.fresh:
            out.append(CheckItem(f"{a.node} sessions", False, "status is stale (agent not publishing)"))
        elif not a.sessions:
            out.append(CheckItem(f"{a.node} sessions", False, "no BGP sessions configured"))
        else:
            out.append(CheckItem(f"{a.node} sessions", not down,
                                 ", ".join(down) if down else f"{len(a.sessions)}/{len(a.sessions)} Established"))
    for r in routers:
        if not r.alive:
            out.append(CheckItem(f"{r.node} ({r.kind}) sessions", False, "router not running"))
            continue
        down = [f"{s.peer} {s.state}" for s in r.sessions if s.state != "Established"]
        out.append(CheckItem(f"{r.node} ({r.kind}) sessions", bool(r.sessions) and not down,
                             ", ".join(down) if down else f"{len(r.sessions)}/{len(r.sessions)} Established"))
    return out


def route_problems(agents: Sequence[AgentView], strict: bool = True) -> dict[str, list[str]]:
    """node -> what is wrong with its kernel routes (empty list: as expected).

    Not `strict` (a fault in place): fabric routes need one next hop, not the full ECMP width."""
    out: dict[str, list[str]] = {}
    for n in agents:
        problems = []
        for m in agents:
            if m.node == n.node:
                continue
            want = expected_next_hops(n, m)
            for block in m.blocks:
                got = n.kernel.get(block)
                if got is None:
                    problems.append(f"{block} of {m.node} missing")
                elif n.node_to_node() and tuple(sorted(got, key=_addr_key)) != want:
                    problems.append(f"{block} of {m.node} via {','.join(got)}, expected {','.join(want)}")
                elif not n.node_to_node() and strict and len(set(got)) != len(want):
                    problems.append(f"{block} of {m.node} via {','.join(got)}: {len(set(got))} next hop(s), "
                                    f"expected {len(want)} (one per Established fabric peer)")
        if not n.blocks:
            problems.append("announces no block of its own")
        out[n.node] = problems
    return out


def routes_items(agents: Sequence[AgentView]) -> list[CheckItem]:
    out = []
    for node, problems in route_problems(agents).items():
        n = next(a for a in agents if a.node == node)
        others = sum(len(m.blocks) for m in agents if m.node != node)
        hops = "ECMP x%d via fabric" % len(n.fabric_next_hops()) if not n.node_to_node() and len(n.fabric_next_hops()) > 1 \
            else ("via fabric" if not n.node_to_node() else "next hop = originating node")
        out.append(CheckItem(f"{node} routes", not problems,
                             "; ".join(problems[:3]) + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else "")
                             if problems else f"{others} blocks of other nodes, {hops}"))
    return out


def ping_items(pings: Sequence[PingResult]) -> list[CheckItem]:
    if not pings:
        return [CheckItem("workload pings", False, "no workloads")]
    failed = [p for p in pings if not p.ok]
    detail = f"{len(pings) - len(failed)}/{len(pings)} pairs reply"
    if failed:
        detail += ": failing " + ", ".join(f"{p.src}->{p.dst}" for p in failed[:6]) + (" ..." if len(failed) > 6 else "")
    return [CheckItem("workload pings", not failed, detail)]


def report(agents: Sequence[AgentView], routers: Sequence[RouterView], pings: Sequence[PingResult]) -> CheckReport:
    return CheckReport(tuple(sessions_items(agents, routers) + routes_items(agents) + ping_items(pings)))
