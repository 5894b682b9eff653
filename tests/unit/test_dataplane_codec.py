"""Our hand-built rtnetlink messages, read back by pyroute2's generic rtmsg decoder."""
from __future__ import annotations

import socket

import pytest
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from dataplane import rtnl_codec as codec
from dataplane.routes.route import NextHop, Route, RouteKind

IFINDEX = {"veth0": 7, "veth1": 9}


def decode(data: bytes) -> rtmsg:
    msg = rtmsg(data)
    msg.decode()
    assert msg["header"]["length"] == len(data)
    return msg


def encode_new(route: Route, flags: int = codec.NEW_FLAGS, table: int = 254, seq: int = 42) -> bytes:
    fwd = route.forwarding()
    return codec.encode_newroute(seq, flags, table, 86, route.key, fwd.rtype, fwd.hops, IFINDEX.__getitem__)


def test_ipv4_one_gateway():
    msg = decode(encode_new(Route.via("198.18.5.0/24", "198.18.0.2")))
    assert msg["header"]["type"] == codec.RTM_NEWROUTE
    assert msg["header"]["sequence_number"] == 42
    assert msg["header"]["flags"] == codec.NLM_F_REQUEST | codec.NLM_F_CREATE | codec.NLM_F_EXCL
    assert (msg["family"], msg["dst_len"], msg["proto"], msg["type"], msg["scope"]) == (socket.AF_INET, 24, 86, 1, 0)
    assert msg["table"] == 254
    assert msg.get_attr("RTA_TABLE") == 254
    assert msg.get_attr("RTA_DST") == "198.18.5.0"
    assert msg.get_attr("RTA_GATEWAY") == "198.18.0.2"
    assert msg.get_attr("RTA_OIF") is None
    assert msg.get_attr("RTA_PRIORITY") == 0


def test_ipv4_gateway_and_device_replace_big_table():
    route = Route(prefix="198.18.9.9/32", nexthops=[NextHop(gateway="198.18.0.2", device="veth1")], metric=20)
    msg = decode(encode_new(route, flags=codec.REPLACE_FLAGS, table=1000))
    assert msg["header"]["flags"] & codec.NLM_F_REPLACE
    assert not msg["header"]["flags"] & codec.NLM_F_EXCL
    assert msg["table"] == 0 and msg.get_attr("RTA_TABLE") == 1000  # > 255 only in the attribute
    assert msg.get_attr("RTA_OIF") == 9
    assert msg.get_attr("RTA_PRIORITY") == 20


def test_gateway_only_replace_in_a_big_table_with_a_metric():
    msg = decode(encode_new(Route.via("198.18.9.8/32", "198.18.0.3", metric=30), flags=codec.REPLACE_FLAGS, table=1000))
    assert msg["header"]["flags"] == codec.REPLACE_FLAGS
    assert (msg["family"], msg["dst_len"], msg["proto"], msg["type"], msg["scope"]) == (socket.AF_INET, 32, 86, 1, 0)
    assert msg["table"] == 0 and msg.get_attr("RTA_TABLE") == 1000
    assert msg.get_attr("RTA_DST") == "198.18.9.8" and msg.get_attr("RTA_GATEWAY") == "198.18.0.3"
    assert msg.get_attr("RTA_PRIORITY") == 30 and msg.get_attr("RTA_OIF") is None


def test_device_only_route_is_link_scope():
    msg = decode(encode_new(Route.via("198.18.6.0/24", device="veth0")))
    assert msg["scope"] == codec.RT_SCOPE_LINK
    assert msg.get_attr("RTA_OIF") == 7
    assert msg.get_attr("RTA_GATEWAY") is None


@pytest.mark.parametrize("kind,rtn", [(RouteKind.BLACKHOLE, 6), (RouteKind.UNREACHABLE, 7)])
def test_blackhole_and_unreachable(kind, rtn):
    msg = decode(encode_new(Route(prefix="198.18.64.0/26", kind=kind)))
    assert msg["type"] == rtn
    assert msg.get_attr("RTA_GATEWAY") is None and msg.get_attr("RTA_OIF") is None
    assert msg.get_attr("RTA_DST") == "198.18.64.0"


def test_ipv4_multipath_with_weights():
    route = Route(
        prefix="198.18.7.0/24",
        nexthops=[NextHop(gateway="198.18.1.2", device="veth1", weight=3), NextHop(gateway="198.18.0.2", device="veth0")],
    )
    msg = decode(encode_new(route))
    hops = msg.get_attr("RTA_MULTIPATH")
    got = sorted((h.get_attr("RTA_GATEWAY"), h["oif"], h["hops"] + 1) for h in hops)
    assert got == [("198.18.0.2", 7, 1), ("198.18.1.2", 9, 3)]
    assert msg.get_attr("RTA_GATEWAY") is None


def test_ipv6_single_and_multipath():
    msg = decode(encode_new(Route.via("2001:db8:5::/64", "2001:db8::2")))
    assert msg["family"] == socket.AF_INET6
    assert msg.get_attr("RTA_DST") == "2001:db8:5::"
    assert msg.get_attr("RTA_GATEWAY") == "2001:db8::2"
    assert msg.get_attr("RTA_PRIORITY") == 1024  # what the kernel stores for metric 0
    msg = decode(encode_new(Route.via("2001:db8:6::/64", "2001:db8::2", "2001:db8:1::2")))
    gws = sorted(h.get_attr("RTA_GATEWAY") for h in msg.get_attr("RTA_MULTIPATH"))
    assert gws == ["2001:db8:1::2", "2001:db8::2"]


@pytest.mark.parametrize("prefix", ["198.18.5.0/24", "2001:db8:5::/64"])
def test_delete_matches_only_our_protocol_with_scope_nowhere(prefix):
    route = Route.blackhole(prefix, metric=7)
    msg = decode(codec.encode_delroute(99, 254, 86, route.key))
    assert msg["header"]["type"] == codec.RTM_DELROUTE
    assert msg["header"]["sequence_number"] == 99
    assert (msg["proto"], msg["scope"], msg["type"]) == (86, codec.RT_SCOPE_NOWHERE, 0)
    assert msg.get_attr("RTA_DST") == prefix.split("/")[0]
    assert msg.get_attr("RTA_PRIORITY") == 7


def test_with_ack_sets_only_the_ack_flag():
    data = encode_new(Route.via("198.18.5.0/24", "198.18.0.2"))
    acked = codec.with_ack(data)
    assert decode(acked)["header"]["flags"] == codec.NEW_FLAGS | codec.NLM_F_ACK
    assert acked[8:] == data[8:]


def kernel_like(route: Route, oif: int) -> bytes:
    """What the kernel dumps for our route: our message plus the resolved RTA_OIF."""
    msg = rtmsg()
    msg["family"] = socket.AF_INET6 if route.prefix.version == 6 else socket.AF_INET
    msg["dst_len"] = route.prefix.prefixlen
    msg["table"] = 254
    msg["proto"] = 86
    msg["type"] = route.kind.rtn
    attrs = [("RTA_TABLE", 254), ("RTA_DST", str(route.prefix.network_address))]
    if route.key.metric:
        attrs.append(("RTA_PRIORITY", route.key.metric))
    if len(route.nexthops) == 1:
        attrs += [("RTA_GATEWAY", str(route.nexthops[0].gateway)), ("RTA_OIF", oif)]
    elif route.nexthops:
        attrs.append(("RTA_MULTIPATH", [{"oif": oif, "hops": h.weight - 1, "attrs": [("RTA_GATEWAY", str(h.gateway))]} for h in route.nexthops]))
    msg["attrs"] = attrs
    msg["header"]["type"] = codec.RTM_NEWROUTE
    msg.encode()
    return bytes(msg.data)


@pytest.mark.parametrize(
    "route",
    [
        Route.via("198.18.5.0/24", "198.18.0.2"),  # the one-unpack fast path
        Route.via("198.18.5.1/32", "198.18.0.2", metric=9),
        Route.via("198.18.5.0/24", "198.18.0.2", "198.18.0.3"),
        Route.blackhole("198.18.64.0/26"),
        Route.via("2001:db8:5::/64", "2001:db8::2"),
        Route.via("2001:db8:5::/64", "2001:db8::2", "2001:db8::3"),
    ],
    ids=str,
)
def test_lean_decoder_reads_what_pyroute2_encodes(route):
    data = kernel_like(route, oif=7)
    got = codec.decode_route(data, 0, len(data))
    assert got is not None
    assert got.key == route.key
    assert (got.rtype, got.protocol, got.table, got.down) == (route.kind.rtn, 86, 254, 0)
    want = tuple((h.gateway.packed, 7, h.weight) for h in route.nexthops)
    assert got.hops == want


@pytest.mark.parametrize("route", [Route.via("198.18.5.0/24", "198.18.0.2"), Route.via("198.18.5.1/32", "198.18.0.2", metric=9)], ids=str)
def test_dump_signature_is_the_kernel_message_without_its_oif(route):
    fwd = route.forwarding()
    sig = codec.dump_signature(254, 86, route.key, fwd.rtype, fwd.hops)
    data = kernel_like(route, oif=7)
    assert data[16:-4] == sig
    other = Route.via(str(route.prefix), "198.18.0.3", metric=route.metric)
    assert kernel_like(other, oif=7)[16:-4] != sig


@pytest.mark.parametrize(
    "route",
    [
        Route.via("198.18.5.0/24", "198.18.0.2", "198.18.0.3"),
        Route(prefix="198.18.5.0/24", nexthops=[NextHop(gateway="198.18.0.2", device="veth0")]),
        Route.blackhole("198.18.64.0/26"),
        Route.via("2001:db8:5::/64", "2001:db8::2"),
    ],
    ids=str,
)
def test_no_dump_signature_for_other_shapes(route):
    fwd = route.forwarding()
    assert codec.dump_signature(254, 86, route.key, fwd.rtype, fwd.hops) is None


def test_the_desired_sets_shared_signature_parts_give_dump_signature():
    """DesiredIndex builds each signature from parts routes alike share; the bytes must be dump_signature's
    whatever order the shapes, lengths and metrics come in."""
    from dataplane.routes.desired_index import DesiredIndex

    routes = [Route.via("198.18.5.0/24", "198.18.0.2"), Route.via("198.18.5.1/32", "198.18.0.2"),
              Route.via("198.18.5.2/32", "198.18.0.2", metric=9), Route.via("198.18.5.3/32", "198.18.0.3"),
              Route.blackhole("198.18.64.0/26"), Route.via("2001:db8:5::/64", "2001:db8::2"),
              Route.via("198.18.5.4/32", "198.18.0.2")]
    expected = {}
    for route in routes:
        fwd = route.forwarding()
        sig = codec.dump_signature(254, 86, route.key, fwd.rtype, fwd.hops)
        if sig is not None:
            expected[sig] = route.key
    assert len(expected) == 5
    for order in (routes, routes[::-1]):
        desired = DesiredIndex(254, 86)
        for route in order:
            desired.put(route)
        assert desired.signatures == expected
    for route in routes:
        desired.drop(route.key)
    assert desired.signatures == {} and desired.routes == {}


def test_the_desired_sets_signatures_are_made_when_asked_and_follow_every_change():
    """Puts and drops leave the signatures unmade (a reader that only saves work with them gets
    none meanwhile); asked for, they are exactly dump_signature of each route desired then."""
    from dataplane.routes.desired_index import DesiredIndex

    routes = [Route.via(f"198.18.5.{i}/32", "198.18.0.2" if i % 3 else "198.18.0.3", metric=i % 2) for i in range(40)]
    routes += [Route.via("198.18.6.0/24", "198.18.0.2"), Route.blackhole("198.18.64.0/26"),
               Route.via("2001:db8:5::/64", "2001:db8::2")]
    desired = DesiredIndex(254, 86)

    def expected() -> dict:
        out = {}
        for route in desired.routes.values():
            fwd = route.forwarding()
            sig = codec.dump_signature(254, 86, route.key, fwd.rtype, fwd.hops)
            if sig is not None:
                out[sig] = route.key
        return out

    assert desired.put_all(routes) == [r.key for r in routes]
    assert desired.known_signatures() == {}
    assert desired.signatures == expected() and len(desired.signatures) == 41
    assert desired.known_signatures() is desired.signatures  # made: readers get them now
    desired.put(Route.via("198.18.5.1/32", "198.18.0.9", metric=1))  # a changed next hop
    assert desired.known_signatures() == {}
    desired.drop_all([routes[2].key, routes[3].key, routes[-1].key])
    assert desired.put_all(routes[5:8]) == []  # desired exactly so already: no change
    assert desired.signatures == expected() and len(desired.signatures) == 39


class _Answer:
    """What a netlink socket returns for one dump request: canned datagrams (the parse is what is tested)."""

    def __init__(self, *datagrams: bytes) -> None:
        self.datagrams = list(datagrams)

    def send(self, _request: bytes) -> None:
        pass

    def recv(self, _size: int) -> bytes:
        return self.datagrams.pop(0)


def _done(seq: int, err: int) -> bytes:
    import struct

    from dataplane import rtnl_codec as codec
    return codec.HDR.pack(20, codec.NLMSG_DONE, 2, seq, 0) + struct.pack("=i", err)


def test_a_dump_that_ends_in_done_with_an_errno_is_an_error_not_an_empty_table():
    import errno

    import pytest

    from dataplane import netlink
    assert list(netlink.dump(_Answer(_done(7, 0)), b"", 7)) == []
    with pytest.raises(netlink.NetlinkError, match="EINTR") as err:
        list(netlink.dump(_Answer(_done(7, -errno.EINTR)), b"", 7))
    assert err.value.__cause__.errno == errno.EINTR


@pytest.mark.parametrize("table", [254, 1000])
def test_a_table_delete_encoder_sends_what_encode_delroute_sends(table):
    """The per-table template gives the same bytes for every family, prefix length and metric."""
    from dataplane.routes.route import RouteKey

    encode = codec.delroute_encoder(table, 86)
    assert codec.delroute_encoder(table, 86) is encode  # made once per table, not per batch
    assert codec.delroute_encoder(table, 87) is not encode
    for alen, metric in ((4, 0), (16, 1024), (4, 77)):
        for dst_len in range(alen * 8 + 1):
            key = RouteKey(dst_len, bytes(range(alen)), metric)
            assert encode(0x7FFFFFF0 - dst_len, key) == codec.encode_delroute(0x7FFFFFF0 - dst_len, table, 86, key)
    msg = decode(encode(5, Route.blackhole("2001:db8:5::/64", metric=7).key))
    assert (msg["header"]["type"], msg["header"]["sequence_number"], msg["dst_len"]) == (codec.RTM_DELROUTE, 5, 64)
    assert (msg["proto"], msg["scope"], msg.get_attr("RTA_DST"), msg.get_attr("RTA_PRIORITY")) == (
        86, codec.RT_SCOPE_NOWHERE, "2001:db8:5::", 7)
