"""`lab check`: observe the lab and decide, retrying until everything passes or the time is up."""
from __future__ import annotations

import time
from typing import Callable

from lab import expectations as check
from lab import observe
from lab.clab import Topology
from lab.state import LabState


def check_once(state: LabState, topo: Topology, pings: bool = True) -> check.CheckReport:
    agents = observe.agents(state)
    routers = observe.routers(state, topo)
    items = check.sessions_items(agents, routers) + check.routes_items(agents)
    if pings and state.workloads:
        if all(i.ok for i in items):
            items += check.ping_items(observe.ping_all(state))
        else:
            items.append(check.CheckItem("workload pings", False, "not tried: sessions or routes not as expected yet"))
    return check.CheckReport(tuple(items))


def check_until(state: LabState, topo: Topology, timeout: float,
                progress: Callable[[str], None] | None = None) -> check.CheckReport:
    deadline = time.monotonic() + timeout
    t0 = time.monotonic()
    last_msg = ""
    while True:
        rep = check_once(state, topo)
        if rep.ok or time.monotonic() >= deadline:
            return rep
        msg = f"waiting ({time.monotonic() - t0:.0f}s): " + "; ".join(
            f"{i.what}: {i.detail}" for i in rep.failures()[:2])
        if progress and msg.split(": ", 1)[1] != last_msg:
            progress(msg[:200])
            last_msg = msg.split(": ", 1)[1]
        time.sleep(1.0)


def converged(state: LabState, topo: Topology) -> bool:
    """Sessions and routes as expected (no pings): what chaos waits for."""
    return check_once(state, topo, pings=False).ok
