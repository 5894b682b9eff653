"""Kernel state for calico-bgp: routes today (XDP/iptables filters later). Imports nothing of calico_bgp.

    route.py       the Route value and the pure plan: desired vs actual -> adds / replaces / deletes
    rtnl_codec.py  the rtnetlink messages we send, built by hand, and a lean decoder for what we read
    netlink.py     NETLINK_ROUTE sockets owned by trio (in a named netns too), bulk requests with acks
    dump.py        reading our table+protocol routes and the links
    events.py      route and link events (IPv4 + IPv6)
    protocol.py    our protocol number and its name for iproute2
    programmer.py  RouteProgrammer: reconcile, watch, restart continuity, counters
"""
from dataplane.programmer import ChangeCounts, ReconcileResult, RouteFailure, RouteProgrammer
from dataplane.protocol import DEFAULT_PROTOCOL, MAIN_TABLE, PROTOCOL_NAME
from dataplane.route import DuplicateRoute, InvalidRoute, NextHop, Route, RouteKind

__all__ = [
    "ChangeCounts",
    "DEFAULT_PROTOCOL",
    "DuplicateRoute",
    "InvalidRoute",
    "MAIN_TABLE",
    "NextHop",
    "PROTOCOL_NAME",
    "ReconcileResult",
    "Route",
    "RouteFailure",
    "RouteKind",
    "RouteProgrammer",
]
