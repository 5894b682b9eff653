"""`lab chaos SCENARIO`: break one thing in a running lab, measure what users feel, repair it.

Every scenario runs the same frame:
1. wait until the lab is converged (sessions and routes as `lab check` expects);
2. start a ring of pingers (each workload pings the next one, 10 per second) and a route watcher
   (every agent node's kernel, every 0.2 s);
3. inject the fault and time how long until the agents have noticed and routes are as expected
   again with the fault in place ("re-converged after fault");
4. keep the fault for the outage, repair it, time until everything is converged again;
5. report lost pings, both times, and every (node, prefix) that vanished from a kernel meanwhile.
"""
from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

import attrs

from lab import expectations as check
from lab import observe, runtime
from lab.check import converged
from lab.clab import Topology
from lab.net import LabError, Ledger, sh
from lab.routers import router_for
from lab.state import LabState, save

Progress = Callable[[str], None] | None
SCENARIOS = ("tor-stop", "link-cut", "agent-kill", "etcd-stop", "session-flap")


@attrs.frozen
class ChaosResult:
    scenario: str
    target: str
    outage: float
    pings_sent: int
    pings_lost: int
    fault_converged: float | None      # seconds from the fault until routes were as expected without it
    repair_converged: float | None     # seconds from the repair until everything was converged again
    routes_lost: tuple[str, ...]       # "node prefix" that vanished from a kernel at some point
    reconverged: bool
    note: str = ""

    def rows(self) -> list[tuple[str, str]]:
        loss = f"{self.pings_lost}/{self.pings_sent}" + (
            f" ({100.0 * self.pings_lost / self.pings_sent:.1f}%)" if self.pings_sent else "")
        return [("scenario", self.scenario), ("target", self.target), ("outage", f"{self.outage:.1f}s"),
                ("workload pings lost", loss),
                ("re-converged after fault", _secs(self.fault_converged)),
                ("re-converged after repair", _secs(self.repair_converged)),
                ("routes lost", str(len(self.routes_lost)) + (": " + ", ".join(self.routes_lost[:6]) if self.routes_lost else "")),
                ("result", "re-converged" if self.reconverged else "NOT re-converged")] + (
                    [("note", self.note)] if self.note else [])

    def as_json(self) -> dict:
        return {"scenario": self.scenario, "target": self.target, "outageSeconds": self.outage,
                "pingsSent": self.pings_sent, "pingsLost": self.pings_lost,
                "faultConvergedSeconds": self.fault_converged, "repairConvergedSeconds": self.repair_converged,
                "routesLost": list(self.routes_lost), "reconverged": self.reconverged, "note": self.note}


def _secs(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}s"


# ------------------------------------------------------------------------------------------ measuring

class Pingers:
    """A ring: workload i pings workload i+1, 10 packets/s, until stop()."""

    def __init__(self, state: LabState) -> None:
        nodes = list(state.workloads)
        self.procs = []
        for i, n in enumerate(nodes):
            if len(nodes) < 2:
                break
            dst = state.workloads[nodes[(i + 1) % len(nodes)]].ip
            self.procs.append(subprocess.Popen(
                ["ip", "netns", "exec", state.workloads[n].ns, "ping", "-i", "0.1", "-W", "1", "-q", dst],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))

    def stop(self) -> tuple[int, int]:
        sent = received = 0
        for p in self.procs:
            p.send_signal(signal.SIGINT)
        for p in self.procs:
            out, _ = p.communicate(timeout=10)
            m = re.search(r"(\d+) packets transmitted, (\d+) received", out or "")
            if m:
                sent += int(m.group(1))
                received += int(m.group(2))
        return sent, sent - received


class RouteWatcher(threading.Thread):
    """Polls every agent node's kernel; remembers each baseline prefix that vanished."""

    def __init__(self, state: LabState) -> None:
        super().__init__(daemon=True)
        self.state = state
        self.baseline = {n: set(observe.kernel_routes(state.namespaces[n])) for n in state.agents}
        self.lost: set[str] = set()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            for n, base in self.baseline.items():
                now = set(observe.kernel_routes(self.state.namespaces[n]))
                self.lost |= {f"{n} {p}" for p in base - now}
            self._halt.wait(0.2)

    def stop(self) -> tuple[str, ...]:
        self._halt.set()
        self.join(5)
        return tuple(sorted(self.lost))


def _wait(pred: Callable[[], bool], timeout: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if pred():
                return time.monotonic() - t0
        except Exception:  # noqa: BLE001 - keep polling through transient errors (etcd down, ...)
            pass
        time.sleep(0.2)
    return None


# ------------------------------------------------------------------------------------------ faults

@attrs.define
class Fault:
    """One scenario: `inject()`, `noticed()` (the fault is visible and routed around), `repair()`."""

    state: LabState
    topo: Topology
    ledger: Ledger
    target: str = ""
    note: str = ""

    def inject(self) -> None: ...
    def noticed(self) -> bool: return True
    def repair(self) -> None: ...
    def repaired(self) -> bool: return converged(self.state, self.topo)


def _routes_ok(state: LabState) -> bool:
    """Routes as expected with a fault in place: one next hop is enough, and a node the fault cut off
    entirely (no session Established) is neither expected to have routes nor to be reachable."""
    views = observe.agents(state)
    reachable = [a for a in views if any(s.state == "Established" for s in a.sessions)]
    return all(not p for p in check.route_problems(reachable, strict=False).values())


def _sessions_to(state: LabState, addrs: set[str]) -> list[tuple[str, check.SessionView]]:
    return [(a.node, s) for a in observe.agents(state) for s in a.sessions if s.peer in addrs]


class RouterStop(Fault):
    def choose(self, target: str | None) -> None:
        routers = [n for n in self.state.routers if self._peer_addrs(n)]
        if target and target not in self.state.routers:
            raise LabError(f"tor-stop: {target!r} is not a fabric router of this lab ({', '.join(self.state.routers) or 'none'})")
        if not target and not routers:
            raise LabError("tor-stop: no fabric router has sessions with the agents in this lab")
        self.target = target or routers[0]
        self.addrs = self._peer_addrs(self.target)

    def _peer_addrs(self, node: str) -> set[str]:
        mine = observe.namespace_addresses(self.state.namespaces[node])
        return {s.peer for _, s in _sessions_to(self.state, mine)}

    def inject(self) -> None:
        for pid in self.state.routers[self.target]:
            try:
                import os
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def noticed(self) -> bool:
        return all(s.state != "Established" for _, s in _sessions_to(self.state, self.addrs)) and _routes_ok(self.state)

    def repair(self) -> None:
        node = self.topo.nodes[self.target]
        r = router_for(node, self.state.namespaces[self.target], Path(self.state.run_dir) / "routers" / self.target)
        _wait(lambda: all(not observe._alive(p) for p in self.state.routers[self.target]), 10)
        pids = tuple(r.start(self.ledger))
        self.state = attrs.evolve(self.state, routers={**self.state.routers, self.target: pids})
        save(self.state)
        from lab import execs
        for step in execs.plan(node.name, node.exec, node.binds, node.role):  # e.g. routes added through its CLI
            if isinstance(step, execs.Shell):
                try:
                    runtime.run_exec(self.state, self.topo, node, step, timeout=30)
                except LabError:
                    pass  # addresses and bridges are still there


class LinkCut(Fault):
    def choose(self, target: str | None) -> None:
        links = self.topo.links
        if target:
            found = [lk for lk in links if target in (str(lk.a), str(lk.b))]
            if not found:
                raise LabError(f"link-cut: no link has endpoint {target!r}")
            self.link = found[0]
        else:
            agent_links = [lk for lk in links if (lk.a.node in self.state.agents) != (lk.b.node in self.state.agents)]
            if not agent_links:
                raise LabError("link-cut: no link between an agent node and another node")
            self.link = agent_links[0]
        self.target = f"{self.link.a}-{self.link.b}"
        # the sessions that ran over the link: from an agent end, to peers on the link's subnets,
        # and any agent's session to an address on the link
        self.pairs: set[tuple[str, str]] = set()   # (agent node, peer address)
        views = observe.agents(self.state)
        for ep in (self.link.a, self.link.b):
            nets = _interface_networks(self.state.namespaces[ep.node], ep.interface)
            local = _interface_addresses(self.state.namespaces[ep.node], ep.interface)
            for a in views:
                for sess in a.sessions:
                    if a.node == ep.node and any(_in(sess.peer, n) for n in nets):
                        self.pairs.add((a.node, sess.peer))
                    if sess.peer in local:
                        self.pairs.add((a.node, sess.peer))

    def _set(self, updown: str) -> None:
        for ep in (self.link.a, self.link.b):
            sh("ip", "link", "set", ep.interface, updown, ns=self.state.namespaces[ep.node])

    def inject(self) -> None:
        self._set("down")

    def noticed(self) -> bool:
        over_link = [s for n, s in _sessions_to(self.state, {p for _, p in self.pairs}) if (n, s.peer) in self.pairs]
        return all(s.state != "Established" for s in over_link) and _routes_ok(self.state)

    def repair(self) -> None:
        self._set("up")


class AgentKill(Fault):
    def choose(self, target: str | None) -> None:
        if target and target not in self.state.agents:
            raise LabError(f"agent-kill: {target!r} runs no agent ({', '.join(self.state.agents)})")
        self.target = target or list(self.state.agents)[0]
        self.restarted_at = float("inf")  # set by repair()

    def inject(self) -> None:
        import os
        try:
            os.kill(self.state.agents[self.target].pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def noticed(self) -> bool:
        return not observe._alive(self.state.agents[self.target].pid)

    def repair(self) -> None:
        old = self.state.agents[self.target]
        self.restarted_at = time.time()
        agent = runtime.start_agent(self.state, self.ledger, self.target, argv=old.argv,
                                    env=self.topo.nodes[self.target].env)
        self.state = attrs.evolve(self.state, agents={**self.state.agents, self.target: agent})
        save(self.state)

    def repaired(self) -> bool:
        views = observe.agents(self.state)
        victim = next(a for a in views if a.node == self.target)
        # the killed agent's status stays in etcd until its lease runs out: only the new one's counts
        return (victim.published and victim.started >= self.restarted_at and not victim.in_grace
                and converged(self.state, self.topo))


class EtcdStop(Fault):
    def choose(self, target: str | None) -> None:
        self.target = "etcd"

    def inject(self) -> None:
        import os
        try:
            os.killpg(self.state.etcd.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        _wait(lambda: not observe._alive(self.state.etcd.pid), 10)

    def noticed(self) -> bool:
        return not observe._alive(self.state.etcd.pid)

    def repair(self) -> None:
        etcd = runtime.restart_etcd(self.state, self.ledger)
        self.state = attrs.evolve(self.state, etcd=etcd)
        save(self.state)

    def repaired(self) -> bool:
        return all(a.fresh for a in observe.agents(self.state)) and converged(self.state, self.topo)


class SessionFlap(Fault):
    def choose(self, target: str | None) -> None:
        views = observe.agents(self.state)
        pairs = [(a.node, s) for a in views for s in a.sessions]
        if target:
            node, _, peer = target.partition(":")
            pairs = [(n, s) for n, s in pairs if n == node and (not peer or s.peer == peer)]
            if not pairs:
                raise LabError(f"session-flap: no session matches {target!r} (NODE or NODE:PEER)")
        if not pairs:
            raise LabError("session-flap: no agent has a session")
        self.node, session = pairs[0]
        self.peer, self.since = session.peer, session.since
        self.target = f"{self.node}:{self.peer}"
        self.note = "the session's TCP connection is destroyed on the node (ss -K): both ends see it drop"

    def inject(self) -> None:
        sh("ss", "-K", "-t", "dst", self.peer, ns=self.state.namespaces[self.node], check=False)

    def noticed(self) -> bool:
        return True

    def repaired(self) -> bool:
        views = observe.agents(self.state)
        s = next((s for a in views if a.node == self.node for s in a.sessions if s.peer == self.peer), None)
        return s is not None and s.state == "Established" and s.since != self.since and converged(self.state, self.topo)


def _interface_addresses(ns: str, ifname: str) -> set[str]:
    import json
    res = sh("ip", "-j", "addr", "show", "dev", ifname, ns=ns, check=False)
    return {a["local"] for link in json.loads(res.stdout or "[]") for a in link.get("addr_info", [])}


def _interface_networks(ns: str, ifname: str) -> list:
    import ipaddress
    import json
    res = sh("ip", "-j", "addr", "show", "dev", ifname, ns=ns, check=False)
    return [ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}").network
            for link in json.loads(res.stdout or "[]") for a in link.get("addr_info", [])]


def _in(addr: str, net) -> bool:  # type: ignore[no-untyped-def]
    import ipaddress
    try:
        return ipaddress.ip_address(addr) in net
    except ValueError:
        return False


FAULTS: dict[str, type[Fault]] = {"tor-stop": RouterStop, "link-cut": LinkCut, "agent-kill": AgentKill,
                                  "etcd-stop": EtcdStop, "session-flap": SessionFlap}


def run(state: LabState, topo: Topology, scenario: str, target: str | None = None, outage: float | None = None,
        timeout: float = 90, progress: Progress = None) -> ChaosResult:
    say = progress or (lambda _: None)
    ledger = Ledger(Path(state.run_dir) / "ledger")
    fault = FAULTS[scenario](state, topo, ledger)
    fault.choose(target)  # type: ignore[attr-defined]
    if outage is None:
        outage = 30.0 if scenario == "etcd-stop" else (0.0 if scenario in ("agent-kill", "session-flap") else 10.0)
    say(f"chaos {scenario} on {fault.target}: waiting for a converged lab first")
    if _wait(lambda: converged(state, topo), timeout) is None:
        raise LabError("the lab is not converged before the fault (see `calico-bgp lab check`)")
    pingers = Pingers(state)
    watcher: RouteWatcher | None = None
    repair_tried = finished = False
    try:
        watcher = RouteWatcher(state)
        watcher.start()
        time.sleep(1.0)  # a clean baseline of pings
        say(f"injecting {scenario} on {fault.target}")
        t0 = time.monotonic()
        fault.inject()
        fault_t = _wait(fault.noticed, timeout)
        say(f"  fault noticed and routed around after {_secs(fault_t)}")
        rest = outage - (time.monotonic() - t0)
        if rest > 0:
            say(f"  keeping the fault for {outage:.0f}s")
            time.sleep(rest)
        say("repairing")
        t1 = time.monotonic()
        repair_tried = True  # once: a second agent, router or etcd on the same sockets would be worse
        fault.repair()
        repair_t = _wait(fault.repaired, timeout)
        say(f"  re-converged after {_secs(repair_t)}")
        time.sleep(1.0)
        sent, lost = pingers.stop()
        routes_lost = watcher.stop()
        finished = True
    finally:
        if not finished:  # interrupted or failed: never leave the lab broken, nor its probes running
            try:
                if not repair_tried:
                    fault.repair()
            finally:
                pingers.stop()
                if watcher is not None:
                    watcher.stop()
    return ChaosResult(scenario=scenario, target=fault.target, outage=round(t1 - t0, 2), pings_sent=sent,
                       pings_lost=lost, fault_converged=None if fault_t is None else round(fault_t, 2),
                       repair_converged=None if repair_t is None else round(repair_t, 2), routes_lost=routes_lost,
                       reconverged=repair_t is not None, note=fault.note)
