"""Prometheus metrics of one node agent.

One registry per agent (not the process-global one) so tests can run several agents in one
process. Labels are bounded: peers, pools, filters and rules are configured objects; there is
never a per-prefix label. Seconds are the unit of time, counters end in `_total`.

Two kinds: what the agent's state says now (sessions, prefixes per peer, kernel routes, damping,
IPAM) is read at scrape time by collector.AgentCollector from the source the agent hands `watch`;
node-wide events (programming latency, reconciler passes, netlink errors, damping events) are
counted where they happen, in the metrics below; the policy filters' mode and counters are shown
to their own collector after each read of the dataplane's counters.
"""
from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, start_http_server

from calico_bgp.bfd.metrics import BfdMetrics
from calico_bgp.telemetry.collector import AgentCollector, FilterCollector, NodeSample


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.collector = AgentCollector()
        r.register(self.collector)
        # routes and the kernel
        self.programming_latency = Histogram(
            "calico_bgp_route_programming_seconds", "UPDATE received to kernel ack",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=r)
        self.netlink_errors = Counter("calico_bgp_netlink_errors_total", "Route changes the kernel refused", registry=r)
        self.route_failures = Counter("calico_bgp_route_failures_total",
                                      "Routes that began to fail (once per prefix and reason, not per retry)", ["stage"], registry=r)
        self.reconcile_runs = Counter("calico_bgp_reconcile_runs_total", "Reconciler passes", ["reconciler"], registry=r)
        self.reconcile_changes = Counter("calico_bgp_reconcile_changes_total", "Changes a reconciler applied",
                                         ["reconciler"], registry=r)
        self.reconcile_repairs = Counter("calico_bgp_reconcile_repairs_total", "State changed behind our back and restored",
                                         ["reconciler"], registry=r)
        for stage in ("build", "kernel"):  # a stage's first failure is an increase() from 0
            self.route_failures.labels(stage)
        self.damping_events = Counter("calico_bgp_damping_events_total", "Suppress and reuse events", ["event"], registry=r)
        self.bfd = BfdMetrics(r)  # BFD sessions and the engine (bfd/metrics.py)
        # policy filters: the mode and per-rule totals agent/policy.FilterMetrics last read
        self.filters = FilterCollector()
        r.register(self.filters)

    def watch(self, source: Callable[[], NodeSample | None]) -> None:
        """Where the scrape-time figures come from (called in the scraping thread)."""
        self.collector.source = source

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
