"""The policy filter semantics (dataplane/filters/rules.py): pure, no kernel."""
from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataplane.filters.rules import (
    FAILSAFE_RULE,
    Action,
    CapacityExceeded,
    EntryAction,
    FailsafePort,
    FilterRule,
    FilterSet,
    InvalidFilter,
    Limits,
    PortRange,
    RuleId,
    assign_slots,
    compile_interface,
    default_failsafe,
    parse_network,
    parse_protocol,
)

TCP, UDP, ICMP = 6, 17, 1


def rule(net: str, action: str, idx: int, proto: int | None = None, ports: tuple = (), name: str = "f") -> FilterRule:
    return FilterRule(ipaddress.ip_network(net), Action(action), RuleId(name, idx), proto,
                      tuple(PortRange.parse(p) for p in ports))


def compiled(*rules: FilterRule, failsafe=()):
    return compile_interface("eth0", rules, failsafe)


def test_most_specific_prefix_wins():
    f = compiled(rule("198.18.0.0/16", "Deny", 0), rule("198.18.1.0/24", "Allow", 1))
    assert f.decide("198.18.1.5", UDP, 53).passed
    assert f.decide("198.18.1.5", UDP, 53).counted == RuleId("f", 1)
    d = f.decide("198.18.2.5", UDP, 53)
    assert not d.passed and d.counted == RuleId("f", 0)
    assert f.decide("198.19.0.1", UDP, 53).passed and f.decide("198.19.0.1", UDP, 53).counted is None


def test_deny_more_specific_than_allow():
    f = compiled(rule("198.18.0.0/16", "Allow", 0), rule("198.18.1.0/24", "Deny", 1))
    assert not f.decide("198.18.1.1", TCP, 80).passed
    assert f.decide("198.18.2.1", TCP, 80).passed


def test_allow_beats_deny_at_equal_length_whatever_the_order():
    for rules in ([rule("198.18.1.0/24", "Deny", 0), rule("198.18.1.0/24", "Allow", 1)],
                  [rule("198.18.1.0/24", "Allow", 1), rule("198.18.1.0/24", "Deny", 0)]):
        f = compiled(*rules)
        d = f.decide("198.18.1.1", TCP, 80)
        assert d.passed and d.counted == RuleId("f", 1)


def test_port_allow_is_an_exception_to_the_deny_at_the_same_prefix():
    f = compiled(rule("198.18.1.0/24", "Deny", 0), rule("198.18.1.0/24", "Allow", 1, TCP, (443, "8000:8080")))
    assert f.decide("198.18.1.1", TCP, 443) .counted == RuleId("f", 1)
    assert f.decide("198.18.1.1", TCP, 8080).passed
    assert not f.decide("198.18.1.1", TCP, 8081).passed
    assert not f.decide("198.18.1.1", UDP, 443).passed


def test_port_allow_alone_inherits_the_covering_verdict():
    f = compiled(rule("198.18.0.0/16", "Deny", 0), rule("198.18.0.0/16", "Allow", 1, UDP, (53,)),
                 rule("198.18.1.0/24", "Allow", 2, TCP, (443,)))
    assert f.decide("198.18.1.1", TCP, 443) .counted == RuleId("f", 2)
    assert f.decide("198.18.1.1", UDP, 53).counted == RuleId("f", 1)   # the /16 exception still applies
    d = f.decide("198.18.1.1", TCP, 80)
    assert not d.passed and d.counted == RuleId("f", 0)                # the /16 Deny, not a pass


def test_port_allow_without_any_covering_rule_only_counts():
    f = compiled(rule("198.18.1.0/24", "Allow", 0, TCP, (443,)))
    assert f.decide("198.18.1.1", TCP, 443).counted == RuleId("f", 0)
    assert f.decide("198.18.1.1", TCP, 80) == f.decide("198.18.1.1", TCP, 80).__class__(True, None)


def test_more_specific_deny_overrides_less_specific_exceptions():
    f = compiled(rule("198.18.0.0/16", "Deny", 0), rule("198.18.0.0/16", "Allow", 1, TCP, (22,)),
                 rule("198.18.1.0/24", "Deny", 2))
    assert not f.decide("198.18.1.1", TCP, 22).passed
    assert f.decide("198.18.2.1", TCP, 22).passed


def test_protocol_only_allow_covers_every_port_and_portless_protocols():
    f = compiled(rule("2001:db8::/32", "Deny", 0), rule("2001:db8::/32", "Allow", 1, 58))
    assert f.decide("2001:db8::1", 58, None).counted == RuleId("f", 1)
    assert not f.decide("2001:db8::1", TCP, 80).passed


def test_failsafe_passes_denied_tcp_udp_only():
    f = compiled(rule("198.18.0.0/15", "Deny", 0), failsafe=default_failsafe())
    assert f.decide("198.18.0.1", TCP, 179) .counted == FAILSAFE_RULE
    assert f.decide("198.18.0.1", UDP, 68).passed
    assert not f.decide("198.18.0.1", UDP, 179).passed
    assert not f.decide("198.18.0.1", ICMP, None).passed
    assert not f.decide("198.18.0.1", TCP, None).passed   # a non-first fragment has no port


def test_ipv4_and_ipv6_are_separate():
    f = compiled(rule("198.18.0.0/15", "Deny", 0), rule("2001:db8:1::/48", "Deny", 1))
    assert len(f.entries_for(4)) == 1 and len(f.entries_for(6)) == 1
    assert f.decide("2001:db8:2::1", TCP, 80).passed
    assert not f.decide("2001:db8:1::1", TCP, 80).passed


@pytest.mark.parametrize("bad, err", [
    (lambda: rule("198.18.0.0/16", "Deny", 0, TCP, (80,)), "Deny takes no protocol"),
    (lambda: rule("198.18.0.0/16", "Allow", 0, ICMP, (80,)), "need protocol TCP, UDP or SCTP"),
    (lambda: parse_network("198.18.0.0/33"), "198.18.0.0/33"),
    (lambda: parse_network("not-a-cidr"), "not-a-cidr"),
    (lambda: PortRange.parse("90:80"), "90:80"),
    (lambda: PortRange.parse("http"), "http"),
    (lambda: parse_protocol("GRE"), "GRE"),
    (lambda: FailsafePort.parse("ICMP", 1), "TCP or UDP"),
    (lambda: compiled(rule("198.18.0.0/16", "Deny", 0), rule("198.18.1.0/24", "Allow", 0)), "two different"),
])
def test_invalid_input_names_the_value(bad, err):
    with pytest.raises(InvalidFilter, match=err):
        bad()


def test_capacity():
    rules = [rule(f"198.18.{i}.0/24", "Deny", i) for i in range(10)]
    with pytest.raises(CapacityExceeded, match="10 rules"):
        compile_interface("eth0", rules, (), Limits(rules=9))
    with pytest.raises(CapacityExceeded, match="prefixes"):
        compile_interface("eth0", rules, (), Limits(prefixes=5))
    with pytest.raises(CapacityExceeded, match="keys"):
        compile_interface("eth0", [rule("198.18.0.0/16", "Deny", 0),
                                   rule("198.18.0.0/16", "Allow", 1, TCP, ("1:2000",))], (), Limits(exception_keys=1000))


def test_filterset_rejects_duplicate_interfaces():
    f = compiled(rule("198.18.0.0/16", "Deny", 0))
    with pytest.raises(InvalidFilter, match="eth0"):
        FilterSet((f, f))


def test_assign_slots_keeps_old_slots_and_fills_holes():
    a, b, c, d = (RuleId("f", i) for i in range(4))
    s1 = assign_slots([a, b, c], {}, 10)
    assert s1 == {a: 1, b: 2, c: 3}
    s2 = assign_slots([c, d], s1, 10)
    assert s2 == {c: 3, d: 4}   # 1 and 2 were just released: used last
    with pytest.raises(CapacityExceeded):
        assign_slots([a, b, c], {}, 2)


def test_entry_actions():
    f = compiled(rule("198.18.1.0/24", "Allow", 0, TCP, (443,)), rule("198.18.0.0/16", "Deny", 1))
    acts = {str(e.prefix): e.verdict.action for e in f.entries}
    assert acts == {"198.18.0.0/16": EntryAction.DENY, "198.18.1.0/24": EntryAction.DENY}


# -- flatten agrees with longest-prefix match -------------------------------------------------

nets4 = st.builds(lambda a, n: ipaddress.ip_network((a & ~((1 << (32 - n)) - 1) if n else 0, n)),
                  st.integers(0xC6120000, 0xC613FFFF), st.integers(14, 32))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(nets4, st.sampled_from(["Allow", "Deny"]), st.booleans()), min_size=1, max_size=12),
       st.lists(st.integers(0xC611FFF0, 0xC6140010), min_size=1, max_size=40))
def test_flatten_is_disjoint_and_agrees_with_lpm(specs, probes):
    rules = []
    for i, (net, action, with_port) in enumerate(specs):
        if action == "Allow" and with_port:
            rules.append(FilterRule(net, Action.ALLOW, RuleId("p", i), TCP, (PortRange(443, 443),)))
        else:
            rules.append(FilterRule(net, Action(action), RuleId("p", i)))
    f = compile_interface("eth0", rules, default_failsafe())
    flat = f.flatten(4)
    nets = [n for n, _ in flat]
    for i, a in enumerate(nets):
        for b in nets[i + 1:]:
            assert not a.overlaps(b)
    for p in probes:
        addr = ipaddress.IPv4Address(p)
        entry = f.lookup(addr)
        hit = [v for n, v in flat if addr in n]
        assert (hit[0] if hit else None) == (entry.verdict if entry else None)


def test_one_rule_many_nets_shares_one_counter():
    f = compiled(rule("198.18.1.0/24", "Deny", 0), rule("198.18.2.0/24", "Deny", 0), rule("2001:db8::/32", "Deny", 0))
    assert [r.rule_id for r in f.rules] == [RuleId("f", 0)]
    assert len(f.entries) == 3
    assert f.decide("198.18.2.1", TCP, 80).counted == RuleId("f", 0)
