"""The BFD engine's Prometheus metrics, registered with the agent's others (telemetry/metrics.py)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class BfdMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.up = Gauge("calico_bgp_bfd_session_up", "1 while the BFD session to the peer is Up, 0 otherwise "
                        "(a series per peer the node runs BFD with)", ["peer"], registry=r)
        self.transitions = Counter("calico_bgp_bfd_session_transitions_total",
                                   "BFD session state changes, by the state entered (up, down, init, admindown)",
                                   ["peer", "to"], registry=r)
        self.failures = Counter("calico_bgp_bfd_session_failures_total",
                                "BFD sessions that left Up (to Down, Init or AdminDown): the peer's routes withdrawn "
                                "and its BGP session reset", ["peer"], registry=r)
        self.available = Gauge("calico_bgp_bfd_engine_available",
                               "0 while BFD sessions are configured and the BFD engine (BIRD) is not answering",
                               registry=r)
