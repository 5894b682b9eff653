"""calico_bgp.routing.prefix: the routing core's prefix value reads, prints, orders and contains
exactly as `ipaddress` does for the same network."""
from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calico_bgp.routing.prefix import Prefix, parse
from dataplane.routes.route import key_of


@st.composite
def networks(draw):
    """Any IPv4 or IPv6 network, IPv6 ones often with runs of zero groups (what '::' compresses)."""
    v6 = draw(st.booleans())
    bits = 128 if v6 else 32
    plen = draw(st.integers(0, bits))
    value = draw(st.integers(0, (1 << bits) - 1))
    if v6:
        for group in draw(st.sets(st.integers(0, 7))):
            value &= ~(0xFFFF << (16 * group))
    value &= ~((1 << (bits - plen)) - 1)
    return (ipaddress.IPv6Network if v6 else ipaddress.IPv4Network)((value, plen))


@pytest.mark.parametrize("text", ["198.18.64.1/32", "198.18.64.0/31", "198.18.64.0/24", "198.18.0.0/15", "0.0.0.0/0",
                                  "2001:db8::/48", "2001:db8::1/128", "::/0", "2001:db8:0:1::/64", "fe80::/10"])
def test_a_parsed_prefix_is_the_ipaddress_network(text):
    p, q = parse(text), ipaddress.ip_network(text)
    assert str(p) == text == str(q) and repr(p) == f"Prefix('{text}')"
    assert (p.version, p.network, p.prefixlen, p.max_prefixlen) == (q.version, int(q.network_address), q.prefixlen,
                                                                    q.max_prefixlen)
    assert p.packed == q.network_address.packed and key_of(p) == key_of(q)
    assert p.to_ipaddress() == q and Prefix.of(q) == p and Prefix.of(text) == p and Prefix.of(p) is p
    assert {p: 1}[parse(text)] == 1 and hash(p) == hash(parse(text))


@given(networks())
@settings(max_examples=400, deadline=None)
def test_any_network_parses_and_prints_as_ipaddress_does(net):
    p = parse(str(net))
    assert p == Prefix.of(net) and str(p) == str(net) and p.to_ipaddress() == net
    assert parse(net.exploded) == p  # the long form too (leading zeros in IPv6 groups)


@given(networks(), networks())
@settings(max_examples=400, deadline=None)
def test_order_and_containment_follow_ipaddress(a, b):
    p, q = Prefix.of(a), Prefix.of(b)
    assert (p == q) == (a == b) and (hash(p) == hash(q)) >= (a == b)
    assert p.contains(q) == (a.version == b.version and b.subnet_of(a))
    assert p.overlaps(q) == (a.version == b.version and a.overlaps(b))
    if a.version == b.version:  # ipaddress orders one family by network address, then mask
        assert (p < q) == (a < b)
    else:
        assert (p < q) == (a.version < b.version)


@pytest.mark.parametrize("text", ["198.18.64.1/24", "01.2.3.4/32", "198.018.0.0/24", "1.2.3.4/33", "x/1", "1.2.3.4/",
                                  "1.2.3/24", "1.2.3.4/ 24", "1.2.3.4/+24", "2001:db8::1/48", "2001:db8::/129",
                                  "1::2::/64", "::1:/64", ":1::/64", "1:2:3:4:5:6:7:8:9/128", "2001:0x1::/32",
                                  "2001:db8:12345::/48", "1:2:3:4:5:6:7::8/128", "", "/", "::/"])
def test_what_ipaddress_refuses_is_refused(text):
    with pytest.raises(ValueError):
        ipaddress.ip_network(text, strict=True)
    assert parse(text) is None
    with pytest.raises(ValueError, match="not a network"):
        Prefix.of(text)


@pytest.mark.parametrize("text, canonical", [("198.18.0.0/255.255.0.0", "198.18.0.0/16"), ("198.18.0.1", "198.18.0.1/32"),
                                             ("2001:0DB8::/32", "2001:db8::/32"), ("::ffff:1.2.3.0/120", "::ffff:102:300/120")])
def test_other_text_ipaddress_accepts_is_the_same_network(text, canonical):
    assert str(parse(text)) == canonical == str(ipaddress.ip_network(text))


def test_a_host_route_of_an_address():
    assert Prefix.host(ipaddress.ip_address("198.19.0.7")) == parse("198.19.0.7/32")
    assert Prefix.host(ipaddress.ip_address("2001:db8::7")) == parse("2001:db8::7/128")


@pytest.mark.parametrize("text", ["1.2.3.04/32", " 1.2.3.4/32", "1.2.3.4 /32", "0x1.2.3.4/32", "1.2.3.-4/32",
                                  "\uff11.2.3.4/32", "1.2.3.4.5/32", "1..2.3/32", "256.1.2.3/32", "0.0.0.0/0",
                                  "255.255.255.255/32", "1.2.3.4/32", "01.2.3.4/32", "1.2.3/32", "1/32"])
def test_ipv4_text_parses_as_ipaddress_has_it(text):
    """The fast IPv4 parser (octet table) is exactly as strict as `ipaddress`: what it refuses goes
    the slow way, so the result is always ipaddress's."""
    try:
        want = Prefix.of(ipaddress.ip_network(text, strict=True))
    except ValueError:
        want = None
    assert parse(text) == want
