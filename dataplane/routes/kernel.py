"""A route as the kernel keys and reports it: plain tuples, no attrs, so the netlink codec (and a
process exec'd per container that only needs the codec) loads without the Route value's machinery.
dataplane/routes/route.py re-exports each name."""
from __future__ import annotations

import ipaddress
from typing import NamedTuple, Union

# kernel route types (rtm_type)
RTN_UNICAST = 1
RTN_BLACKHOLE = 6
RTN_UNREACHABLE = 7


class RouteKey(NamedTuple):
    """What makes a route one entry in a kernel table (with table and tos fixed)."""

    dst_len: int
    dst: bytes  # 4 or 16 bytes: the family is in the length
    metric: int  # effective: an IPv6 route with metric 0 is stored as 1024

    @property
    def family_v6(self) -> bool:
        return len(self.dst) == 16

    def prefix(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        addr = ipaddress.ip_address(self.dst)
        return ipaddress.ip_network(f"{addr}/{self.dst_len}")


# (gateway packed or None, device name or None (= any), weight)
DesiredHop = tuple[Union[bytes, None], Union[str, None], int]
# (gateway packed or None, ifindex (0 = none), weight)
KernelHop = tuple[Union[bytes, None], int, int]


class KernelRoute(NamedTuple):
    """A route of ours as the kernel reports it (a lean decode of RTM_NEWROUTE)."""

    key: RouteKey
    rtype: int
    hops: tuple[KernelHop, ...]
    down: int  # how many of its next hops the kernel marks dead or link-down
    protocol: int
    table: int
