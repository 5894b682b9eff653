"""The per-peer and per-node figures of one agent, read at scrape time (as GoBGP's
pkg/server/metrics.go reads its peers): nothing is pushed into gauges, nothing is pruned by hand.

At each scrape the collector asks its source for a `NodeSample` (a value the agent takes from its
state, in its own thread) and turns it into metric families (`families`, pure). A peer is in the
exposition while it is a configured session, and only then: a removed peer leaves no series, a
configured one has its counters from the start at 0 (so `increase()` sees its first flap), and a
peer whose session changes kind (mesh -> rr-client) starts a new series at 0.

Event counters of a peer (`PeerCounts`) are incremented where the event happens and live as long
as the peer's session; the collector only reads them.
"""
from __future__ import annotations

from typing import Callable, Iterator

import attrs
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

SESSION_STATES = ("idle", "connect", "active", "opensent", "openconfirm", "established")
PREFIX_KINDS = ("received", "accepted", "rejected", "damped")
ORIGIN_ACTIONS = ("rejected", "depreferred")
UNKNOWN = "unknown"  # the peer_type of a NOTIFICATION from a peer that is no session of ours


@attrs.define
class PeerCounts:
    """One configured peer's event counters."""

    transitions: int = 0
    flaps: int = 0
    updates_received: int = 0
    withdrawals_received: int = 0
    updates_sent: int = 0
    withdrawals_sent: int = 0
    notifications: dict[str, int] = attrs.field(factory=dict)        # NOTIFICATION code -> count
    max_prefix_actions: dict[str, int] = attrs.field(factory=dict)   # action -> count
    malformed: dict[str, int] = attrs.field(factory=dict)            # RFC 7606 reason -> count

    def copy(self) -> PeerCounts:
        return attrs.evolve(self, notifications=dict(self.notifications),
                            max_prefix_actions=dict(self.max_prefix_actions), malformed=dict(self.malformed))


def count(tally: dict[str, int], key: str, n: int = 1) -> None:
    tally[key] = tally.get(key, 0) + n


@attrs.frozen
class PeerSample:
    peer: str
    peer_type: str
    state: str | None = None                 # one of SESSION_STATES once the session reported one
    established_seconds: float | None = None  # with `flap_score`: once its stability is tracked
    flap_score: float | None = None
    prefixes: tuple[int, int, int, int] = (0, 0, 0, 0)  # PREFIX_KINDS
    origin_invalid: tuple[int, int] = (0, 0)             # ORIGIN_ACTIONS
    counts: PeerCounts = attrs.field(factory=PeerCounts)


@attrs.frozen
class PoolSample:
    pool: str
    utilisation: float
    blocks: int


@attrs.frozen
class NodeSample:
    peers: tuple[PeerSample, ...] = ()
    stray_notifications: tuple[tuple[str, str, int], ...] = ()  # (peer, code, count): no session of ours
    kernel_unicast: int = 0
    kernel_blackhole: int = 0
    failed_build: int = 0          # desired routes no kernel route can express
    failed_kernel: int = 0         # desired routes the kernel refused (retried with back-off)
    damped: int = 0
    pools: tuple[PoolSample, ...] = ()
    borrowed: int = 0
    nat_mode: str | None = None    # IPPool natOutgoing's netfilter tool (None: no NAT programmed)
    nat_masquerade: int = 0        # pool CIDRs masqueraded


PEER = ["peer", "peer_type"]
NAT_MODES = ("nft", "iptables")  # dataplane/nat/engine.py MODES (telemetry imports nothing of the dataplane)


def families(sample: NodeSample | None) -> list[Metric]:
    """The metric families of one sample; every family is there (empty) when there is no sample."""
    s = sample or NodeSample()

    def gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=labels)

    def counter(name: str, doc: str, labels: list[str] | None = None) -> CounterMetricFamily:
        return CounterMetricFamily(name, doc, labels=labels)

    state = gauge("calico_bgp_peer_session_state", "1 for the session's current state, 0 for the others",
                  [*PEER, "state"])
    established = gauge("calico_bgp_peer_established_seconds", "Seconds the session has been Established (0 when down)",
                        PEER)
    transitions = counter("calico_bgp_peer_transitions_total", "Session state changes", PEER)
    flaps = counter("calico_bgp_peer_flaps_total", "Established sessions that went down", PEER)
    flap_score = gauge("calico_bgp_peer_flap_score", "Recent flaps, each halving every 15 min", PEER)
    notifications = counter("calico_bgp_peer_notifications_total", "NOTIFICATIONs and session errors by code",
                            [*PEER, "code"])
    updates_received = counter("calico_bgp_peer_updates_received_total", "Prefixes announced by the peer", PEER)
    withdrawals_received = counter("calico_bgp_peer_withdrawals_received_total", "Prefixes withdrawn by the peer", PEER)
    updates_sent = counter("calico_bgp_peer_updates_sent_total", "Prefixes we announced to the peer", PEER)
    withdrawals_sent = counter("calico_bgp_peer_withdrawals_sent_total", "Prefixes we withdrew from the peer", PEER)
    prefixes = gauge("calico_bgp_peer_prefixes", "Prefixes from the peer by fate", [*PEER, "kind"])
    malformed = counter("calico_bgp_peer_malformed_updates_total",
                        "Malformed UPDATEs (RFC 7606) by reason (calico_bgp/routing/malformed.py)", ["peer", "reason"])
    max_prefix = counter("calico_bgp_peer_max_prefix_actions_total", "maxPrefixes limit hits", [*PEER, "action"])
    origin = gauge("calico_bgp_peer_origin_invalid_prefixes",
                   "Prefixes from the peer whose origin is invalid by IPAM, rejected or de-preferred", [*PEER, "action"])
    for p in s.peers:
        who, c = [p.peer, p.peer_type], p.counts
        if p.state is not None:
            for name in SESSION_STATES:
                state.add_metric([*who, name], 1 if name == p.state else 0)
        if p.established_seconds is not None:
            established.add_metric(who, p.established_seconds)
        if p.flap_score is not None:
            flap_score.add_metric(who, p.flap_score)
        for family, value in ((transitions, c.transitions), (flaps, c.flaps), (updates_received, c.updates_received),
                              (withdrawals_received, c.withdrawals_received), (updates_sent, c.updates_sent),
                              (withdrawals_sent, c.withdrawals_sent)):
            family.add_metric(who, value)
        for code, n in sorted(c.notifications.items()):
            notifications.add_metric([*who, code], n)
        for action, n in sorted(c.max_prefix_actions.items()):
            max_prefix.add_metric([*who, action], n)
        for reason, n in sorted(c.malformed.items()):
            malformed.add_metric([p.peer, reason], n)
        for kind, n in zip(PREFIX_KINDS, p.prefixes):
            prefixes.add_metric([*who, kind], n)
        for action, n in zip(ORIGIN_ACTIONS, p.origin_invalid):
            origin.add_metric([*who, action], n)
    for peer, code, n in s.stray_notifications:
        notifications.add_metric([peer, UNKNOWN, code], n)
    kernel = gauge("calico_bgp_kernel_routes", "Routes of ours in the kernel", ["kind"])
    kernel.add_metric(["blackhole"], s.kernel_blackhole)
    kernel.add_metric(["unicast"], s.kernel_unicast)
    # stage: build (a selection no kernel route can express) or kernel (refused by netlink)
    failed = gauge("calico_bgp_kernel_route_failures", "Desired routes not in the kernel because they failed", ["stage"])
    failed.add_metric(["build"], s.failed_build)
    failed.add_metric(["kernel"], s.failed_kernel)
    damped = gauge("calico_bgp_damped_prefixes", "Paths suppressed by flap damping now")
    damped.add_metric([], s.damped)
    utilisation = gauge("calico_bgp_ipam_pool_utilisation_ratio", "Allocated / usable addresses", ["pool"])
    blocks = gauge("calico_bgp_ipam_pool_blocks", "Blocks claimed in the pool", ["pool"])
    for pool in s.pools:
        utilisation.add_metric([pool.pool], pool.utilisation)
        blocks.add_metric([pool.pool], pool.blocks)
    borrowed = gauge("calico_bgp_ipam_borrowed_addresses", "Addresses this node holds in others' blocks")
    borrowed.add_metric([], s.borrowed)
    nat_mode = gauge("calico_bgp_nat_mode", "1 for the netfilter tool masquerading natOutgoing pools", ["mode"])
    for m in NAT_MODES:
        nat_mode.add_metric([m], 1 if m == s.nat_mode else 0)
    nat_pools = gauge("calico_bgp_nat_masquerade_cidrs", "natOutgoing pool CIDRs masqueraded")
    nat_pools.add_metric([], s.nat_masquerade)
    return [state, established, transitions, flaps, flap_score, notifications, updates_received,
            withdrawals_received, updates_sent, withdrawals_sent, prefixes, malformed, max_prefix, origin,
            kernel, failed, damped, utilisation, blocks, borrowed, nat_mode, nat_pools]


class AgentCollector(Collector):
    """Reads its source at every scrape. The source is called in the scraping thread: it must be
    safe there (the agent's hops into its trio thread); None (no agent yet, or gone) gives empty
    families."""

    def __init__(self) -> None:
        self.source: Callable[[], NodeSample | None] | None = None

    def collect(self) -> Iterator[Metric]:
        yield from families(self.source() if self.source is not None else None)

    def describe(self) -> Iterator[Metric]:
        yield from families(None)


FILTER_MODES = ("xdp", "nft", "iptables")
RuleLabels = tuple[str, str, str, str]  # filter, rule, interface, action


@attrs.frozen
class FilterSample:
    """Policy filter enforcement: the mode in use (None: none) and each rule's running totals."""

    mode: str | None = None
    rules: tuple[tuple[RuleLabels, int, int], ...] = ()   # (labels, packets, bytes)


def filter_families(sample: FilterSample) -> list[Metric]:
    mode = GaugeMetricFamily("calico_bgp_filter_mode", "1 for the enforcement mode in use", labels=["mode"])
    for m in FILTER_MODES:
        mode.add_metric([m], 1 if m == sample.mode else 0)
    rule = ["filter", "rule", "interface", "action"]
    packets = CounterMetricFamily("calico_bgp_filter_packets_total", "Packets matched by a filter rule", labels=rule)
    octets = CounterMetricFamily("calico_bgp_filter_bytes_total", "Bytes matched by a filter rule", labels=rule)
    for labels, p, b in sample.rules:
        packets.add_metric(list(labels), p)
        octets.add_metric(list(labels), b)
    return [mode, packets, octets]


class FilterCollector(Collector):
    """Exposes the last FilterSample it was shown (`show` swaps one value: safe from any thread)."""

    def __init__(self) -> None:
        self.sample = FilterSample()

    def show(self, sample: FilterSample) -> None:
        self.sample = sample

    def collect(self) -> Iterator[Metric]:
        yield from filter_families(self.sample)

    def describe(self) -> Iterator[Metric]:
        yield from filter_families(FilterSample())
