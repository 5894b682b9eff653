"""PolicyFilter resources -> the FilterSet one node enforces (pure), its counters -> metrics, and the
small reconciler the agent runs to connect the two to a FilterEngine.

Which filters apply: those whose nodeSelector matches the node's labels. On which interfaces: the
names or shell-style patterns (`ens*`) in `interfaces`, matched against the node's interfaces, or the
node's uplinks when the list is empty. Every filter that lands on an interface is compiled together
with the others there (dataplane/filters/rules.py has the semantics); the failsafe ports of an
interface are the union of those filters' `failsafeInboundPorts`.

A rule's counter id is (filter name, rule index); all the nets of one rule share it.
"""
from __future__ import annotations

import fnmatch
import logging
from typing import Iterable, Sequence

from calico_bgp.telemetry.collector import FilterSample
from dataplane.filters.rules import (
    FAILSAFE_RULE,
    LIMITS,
    Action,
    FailsafePort,
    FilterError,
    FilterRule,
    FilterSet,
    InvalidFilter,
    Limits,
    PortRange,
    RuleCounter,
    RuleId,
    compile_interface,
    parse_network,
    parse_protocol,
)
from dataplane.logfmt import event

log = logging.getLogger(__name__)


def _is_pattern(name: str) -> bool:
    return any(c in name for c in "*?[")


def target_interfaces(patterns: Sequence[str], interfaces: Sequence[str], uplinks: Sequence[str],
                      filter_name: str) -> list[str]:
    if not patterns:
        return [i for i in uplinks if i in interfaces]
    out: list[str] = []
    for p in patterns:
        if _is_pattern(p):
            out += [i for i in interfaces if fnmatch.fnmatchcase(i, p)]
        elif p in interfaces:
            out.append(p)
        else:
            raise InvalidFilter(f"PolicyFilter {filter_name}: interface {p!r} does not exist on this node "
                                f"(has {', '.join(sorted(interfaces)) or 'none'})")
    return list(dict.fromkeys(out))


def filter_rules(policy) -> list[FilterRule]:
    """The dataplane rules of one PolicyFilter (resources/policyfilter.py), one per (rule, source net)."""
    out: list[FilterRule] = []
    for index, rule in enumerate(policy.spec.rules):
        rid = RuleId(policy.name, index)
        where = f"PolicyFilter {policy.name} rule {index}"
        try:
            proto = parse_protocol(rule.protocol) if rule.protocol not in ("", None) else None
            ports = tuple(PortRange.parse(p) for p in rule.destination.ports)
            for net in rule.source.nets:
                out.append(FilterRule(parse_network(net), Action(rule.action), rid, proto, ports))
        except InvalidFilter as exc:
            raise InvalidFilter(f"{where}: {exc}") from None
    return out


def failsafe_ports(policy) -> list[FailsafePort]:
    return [FailsafePort.parse(p.protocol, int(p.port)) for p in policy.spec.failsafe_inbound_ports]


def node_filterset(policies: Iterable, node_labels: dict[str, str], interfaces: Sequence[str],
                   uplinks: Sequence[str], limits: Limits = LIMITS) -> FilterSet:
    """The FilterSet for one node. Raises InvalidFilter / CapacityExceeded naming the filter, the
    field and the value; the caller then keeps whatever is programmed."""
    per_iface: dict[str, list[FilterRule]] = {}
    failsafe: dict[str, set[FailsafePort]] = {}
    for policy in sorted(policies, key=lambda p: p.name):
        if not policy.spec.node_selector.matches(node_labels):
            continue
        rules = filter_rules(policy)
        fs = failsafe_ports(policy)
        for ifname in target_interfaces(policy.spec.interfaces, interfaces, uplinks, policy.name):
            per_iface.setdefault(ifname, []).extend(rules)
            failsafe.setdefault(ifname, set()).update(fs)
    return FilterSet(tuple(compile_interface(i, per_iface[i], failsafe[i], limits) for i in sorted(per_iface)))


class FilterMetrics:
    """Turns the dataplane's absolute counters into the running totals telemetry.Metrics exposes
    (filter_mode, filter_packets, filter_bytes). Totals only go up: a value lower than the last one
    seen (a rule's counter recreated) counts as a reset. A rule no longer there has no series."""

    def __init__(self, metrics) -> None:
        self.metrics = metrics
        self._last: dict[tuple[str, str, str, str], tuple[int, int]] = {}    # the dataplane's, as last read
        self._totals: dict[tuple[str, str, str, str], tuple[int, int]] = {}  # what is exposed

    @staticmethod
    def labels(c: RuleCounter) -> tuple[str, str, str, str]:
        if c.rule_id == FAILSAFE_RULE:
            return ("", "failsafe", c.interface, "Allow")
        return (c.rule_id.filter, str(c.rule_id.index), c.interface, c.action)

    def update(self, mode: str | None, counters: Iterable[RuleCounter]) -> None:
        last: dict[tuple[str, str, str, str], tuple[int, int]] = {}
        totals: dict[tuple[str, str, str, str], tuple[int, int]] = {}
        for c in counters:
            key = self.labels(c)
            lp, lb = last.get(key) or self._last.get(key, (0, 0))
            tp, tb = totals.get(key) or self._totals.get(key, (0, 0))
            totals[key] = (tp + (c.packets - lp if c.packets >= lp else c.packets),
                           tb + (c.bytes - lb if c.bytes >= lb else c.bytes))
            last[key] = (c.packets, c.bytes)
        self._last, self._totals = last, totals  # a removed rule is in neither: its series goes
        self.metrics.filters.show(FilterSample(mode, tuple((k, p, b) for k, (p, b) in sorted(totals.items()))))


class PolicyFilterReconciler:
    """What the agent wires in: PolicyFilters (from the cluster view) -> the engine, counters -> metrics.

    Deciding is `node_filterset` (pure); this only moves values and runs the blocking engine in a
    thread. A filter that does not compile, or names an interface this node lacks, is logged and
    reported in `last_error`; whatever is programmed stays as it was.
    """

    def __init__(self, engine, metrics=None) -> None:
        self.engine = engine
        self.metrics = FilterMetrics(metrics) if metrics is not None else None
        self.last_error: str | None = None
        self.applied: FilterSet | None = None

    async def reconcile(self, policies: Iterable, node_labels: dict[str, str], interfaces: Sequence[str],
                        uplinks: Sequence[str], force: bool = False) -> str | None:
        """Apply when the node's FilterSet changed, or always with `force` (a periodic pass repairs
        state changed behind our back: the engine compares with what the kernel holds)."""
        import trio

        try:
            fs = node_filterset(policies, node_labels, interfaces, uplinks)
            if force or fs != self.applied or (self.engine.mode is None and fs.interfaces):
                await trio.to_thread.run_sync(self.engine.apply, fs)
        except FilterError as exc:
            self.last_error = str(exc)
            event(log, "policy_filter_rejected", logging.ERROR, mode=self.engine.mode, error=str(exc))
            return self.engine.mode
        except Exception as exc:  # noqa: BLE001 - no mode would take it (or a kernel error): never fatal
            # to the agent, whose routing does not depend on it; what is programmed stays, next pass retries
            self.last_error = f"{type(exc).__name__}: {exc}"
            event(log, "policy_filter_failed", logging.ERROR, mode=self.engine.mode, error=self.last_error)
            return self.engine.mode
        if fs != self.applied:
            event(log, "policy_filter_applied", mode=self.engine.mode, interfaces=",".join(fs.names) or "-")
        self.applied, self.last_error = fs, None
        return self.engine.mode

    async def export_metrics(self) -> None:
        import trio

        if self.metrics is None:
            return
        # no mode, no counters: the periodic pass of an agent without filters costs no thread
        counters = await trio.to_thread.run_sync(self.engine.counters) if self.engine.mode is not None else []
        self.metrics.update(self.engine.mode, counters)
