"""Prometheus metrics of one node agent.

One registry per agent (not the process-global one) so tests can run several agents in one
process. Labels are bounded: peers, pools, filters and rules are configured objects; there is
never a per-prefix label. Seconds are the unit of time, counters end in `_total`.
"""
from __future__ import annotations

from typing import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

SESSION_STATES = ("idle", "connect", "active", "opensent", "openconfirm", "established")
PREFIX_KINDS = ("received", "accepted", "rejected", "damped")
ORIGIN_ACTIONS = ("rejected", "depreferred")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        peer = ["peer", "peer_type"]
        # per peer
        self.peer_state = Gauge("calico_bgp_peer_session_state", "1 for the session's current state, 0 for the others",
                                [*peer, "state"], registry=r)
        self.peer_established_seconds = Gauge("calico_bgp_peer_established_seconds",
                                              "Seconds the session has been Established (0 when down)", peer, registry=r)
        self.peer_transitions = Counter("calico_bgp_peer_transitions_total", "Session state changes", peer, registry=r)
        self.peer_flaps = Counter("calico_bgp_peer_flaps_total", "Established sessions that went down", peer, registry=r)
        self.peer_flap_score = Gauge("calico_bgp_peer_flap_score", "Recent flaps, each halving every 15 min", peer, registry=r)
        self.peer_notifications = Counter("calico_bgp_peer_notifications_total",
                                          "NOTIFICATIONs and session errors by code", [*peer, "code"], registry=r)
        self.updates_received = Counter("calico_bgp_peer_updates_received_total", "Prefixes announced by the peer", peer, registry=r)
        self.withdrawals_received = Counter("calico_bgp_peer_withdrawals_received_total", "Prefixes withdrawn by the peer", peer, registry=r)
        self.updates_sent = Counter("calico_bgp_peer_updates_sent_total", "Prefixes we announced to the peer", peer, registry=r)
        self.withdrawals_sent = Counter("calico_bgp_peer_withdrawals_sent_total", "Prefixes we withdrew from the peer", peer, registry=r)
        self.peer_prefixes = Gauge("calico_bgp_peer_prefixes", "Prefixes from the peer by fate", [*peer, "kind"], registry=r)
        self.malformed_updates = Counter("calico_bgp_peer_malformed_updates_total",
                                         "Malformed UPDATEs (RFC 7606) by reason (calico_bgp/routing/malformed.py)",
                                         ["peer", "reason"], registry=r)
        self.max_prefix_actions = Counter("calico_bgp_peer_max_prefix_actions_total", "maxPrefixes limit hits",
                                          [*peer, "action"], registry=r)
        self.origin_invalid = Gauge("calico_bgp_peer_origin_invalid_prefixes",
                                    "Prefixes from the peer whose origin is invalid by IPAM, rejected or de-preferred",
                                    [*peer, "action"], registry=r)
        # per node: routes and the kernel
        self.kernel_routes = Gauge("calico_bgp_kernel_routes", "Routes of ours in the kernel", ["kind"], registry=r)
        self.programming_latency = Histogram(
            "calico_bgp_route_programming_seconds", "UPDATE received to kernel ack",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=r)
        self.netlink_errors = Counter("calico_bgp_netlink_errors_total", "Route changes the kernel refused", registry=r)
        # stage: build (a selection no kernel route can express) or kernel (refused by netlink)
        self.failed_routes = Gauge("calico_bgp_kernel_route_failures", "Desired routes not in the kernel because they failed",
                                   ["stage"], registry=r)
        self.route_failures = Counter("calico_bgp_route_failures_total",
                                      "Routes that began to fail (once per prefix and reason, not per retry)", ["stage"], registry=r)
        self.reconcile_runs = Counter("calico_bgp_reconcile_runs_total", "Reconciler passes", ["reconciler"], registry=r)
        self.reconcile_changes = Counter("calico_bgp_reconcile_changes_total", "Changes a reconciler applied",
                                         ["reconciler"], registry=r)
        self.reconcile_repairs = Counter("calico_bgp_reconcile_repairs_total", "State changed behind our back and restored",
                                         ["reconciler"], registry=r)
        for stage in ("build", "kernel"):
            self.failed_routes.labels(stage).set(0)
            self.route_failures.labels(stage)
        self.damped_prefixes = Gauge("calico_bgp_damped_prefixes", "Paths suppressed by flap damping now", registry=r)
        self.damping_events = Counter("calico_bgp_damping_events_total", "Suppress and reuse events", ["event"], registry=r)
        # IPAM
        self.pool_utilisation = Gauge("calico_bgp_ipam_pool_utilisation_ratio", "Allocated / usable addresses", ["pool"], registry=r)
        self.pool_blocks = Gauge("calico_bgp_ipam_pool_blocks", "Blocks claimed in the pool", ["pool"], registry=r)
        self.borrowed_addresses = Gauge("calico_bgp_ipam_borrowed_addresses", "Addresses this node holds in others' blocks", registry=r)
        # policy filters
        self.filter_mode = Gauge("calico_bgp_filter_mode", "1 for the enforcement mode in use", ["mode"], registry=r)
        self.filter_packets = Counter("calico_bgp_filter_packets_total", "Packets matched by a filter rule",
                                      ["filter", "rule", "interface", "action"], registry=r)
        self.filter_bytes = Counter("calico_bgp_filter_bytes_total", "Bytes matched by a filter rule",
                                    ["filter", "rule", "interface", "action"], registry=r)

    def set_peer_state(self, peer: str, peer_type: str, state: str) -> None:
        for s in SESSION_STATES:
            self.peer_state.labels(peer, peer_type, s).set(1 if s == state else 0)

    def init_peer(self, peer: str, peer_type: str) -> None:
        """Counters of a configured peer start at 0, so increase() sees its first flap."""
        for metric in (self.peer_transitions, self.peer_flaps, self.updates_received, self.withdrawals_received,
                       self.updates_sent, self.withdrawals_sent):
            metric.labels(peer, peer_type)

    def forget_peer(self, peer: str, peer_type: str) -> None:
        """Drop a removed peer's series so dashboards do not show ghosts."""
        for metric in (self.peer_established_seconds, self.peer_transitions, self.peer_flaps, self.peer_flap_score,
                       self.updates_received, self.withdrawals_received, self.updates_sent, self.withdrawals_sent):
            _remove(metric, (peer, peer_type))
        for s in SESSION_STATES:
            _remove(self.peer_state, (peer, peer_type, s))
        for k in PREFIX_KINDS:
            _remove(self.peer_prefixes, (peer, peer_type, k))
        for action in ORIGIN_ACTIONS:
            _remove(self.origin_invalid, (peer, peer_type, action))
        for metric in (self.peer_notifications, self.max_prefix_actions):  # per code / action seen
            for labels in [ls for ls in _series(metric) if ls[:2] == (peer, peer_type)]:
                _remove(metric, labels)
        for labels in [ls for ls in _series(self.malformed_updates) if ls[0] == peer]:
            _remove(self.malformed_updates, labels)

    def forget_pool(self, pool: str) -> None:
        _remove(self.pool_utilisation, (pool,))
        _remove(self.pool_blocks, (pool,))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        start_http_server(port, addr=addr, registry=self.registry)


def _series(metric: object) -> list[tuple[str, ...]]:
    """The label values of every series a labelled metric has (prometheus_client keeps no public list)."""
    return list(getattr(metric, "_metrics", {}))


def _remove(metric: object, labels: Iterable[str]) -> None:
    try:
        metric.remove(*labels)  # type: ignore[attr-defined]
    except KeyError:
        pass
