"""Event decoding and the protocol-name file, without a kernel."""
from __future__ import annotations

import socket

from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from dataplane import rtnl_codec as codec
from dataplane.routes import events
from dataplane.routes.protocol import register_protocol_name
from dataplane.routes.route import Route
from tests.unit.test_dataplane_codec import kernel_like


def as_event(data: bytes, mtype: int) -> bytes:
    return data[:4] + mtype.to_bytes(2, "little") + data[6:]


def link_message(index: int, name: str, flags: int, mtype: int = codec.RTM_NEWLINK) -> bytes:
    msg = ifinfmsg()
    msg["family"] = socket.AF_UNSPEC
    msg["index"] = index
    msg["flags"] = flags
    msg["attrs"] = [("IFLA_IFNAME", name)]
    msg["header"]["type"] = mtype
    msg.encode()
    return bytes(msg.data)


def test_route_and_link_events_in_one_datagram():
    a = Route.via("198.18.5.0/24", "198.18.0.2")
    b = Route.via("2001:db8:5::/64", "2001:db8::2")
    data = (
        as_event(kernel_like(a, 7), codec.RTM_NEWROUTE)
        + as_event(kernel_like(b, 7), codec.RTM_DELROUTE)
        + link_message(7, "v1", codec.IFF_UP | codec.IFF_LOWER_UP)
        + link_message(8, "v2", codec.IFF_UP, codec.RTM_DELLINK)
    )
    got = events.decode_events(data)
    assert [type(e).__name__ for e in got] == ["RouteEvent", "RouteEvent", "LinkEvent", "LinkEvent"]
    assert got[0].route.key == a.key and not got[0].deleted
    assert got[1].route.key == b.key and got[1].deleted
    assert got[2].link.name == "v1" and got[2].link.usable and not got[2].deleted
    assert got[3].link.index == 8 and not got[3].link.usable and got[3].deleted


def test_events_for_routes_already_as_wanted_are_dropped():
    a = Route.via("198.18.5.0/24", "198.18.0.2")
    fwd = a.forwarding()
    known = {codec.dump_signature(254, 86, a.key, fwd.rtype, fwd.hops): 0}
    new = as_event(kernel_like(a, 7), codec.RTM_NEWROUTE)
    assert events.decode_events(new, known) == []
    # a delete of the same route is never dropped
    assert len(events.decode_events(as_event(kernel_like(a, 7), codec.RTM_DELROUTE), known)) == 1


def test_register_protocol_name(tmp_path):
    assert register_protocol_name(86, "calico-bgp", str(tmp_path))
    assert (tmp_path / "calico-bgp.conf").read_text().splitlines()[-1] == "86\tcalico-bgp"
    assert register_protocol_name(86, "calico-bgp", str(tmp_path))  # idempotent
    assert not register_protocol_name(86, "calico-bgp", "/proc/nonexistent/dir")
