"""Kernel state for calico-bgp: routes and policy filters. Imports nothing of calico_bgp.

    routes/        our routes in the kernel (one table, one protocol): the Route value and the pure
                   plan, the dump and event readers, the RouteProgrammer that reconciles them
    filters/       policy filters: the pure semantics (rules.py), the engine that picks a mode, and the
                   three modes (xdp/, nft.py, ipt.py)
    workload/      a workload's veth, addresses and routes as Calico's CNI plugin wires them
    netlink.py     NETLINK_ROUTE sockets (in a named netns too), bulk requests with acks under trio,
                   blocking queries and dumps (no trio loaded: what a CNI plugin uses)
    rtnl_codec.py  the rtnetlink messages we send, built by hand, and a lean decoder for what we read
    ratelimit.py   bounded per-route warnings and event bursts
    logfmt.py      the one structured-log helper (`event=NAME key=value`), for every package

Packages export nothing: import from the module that holds a name, so a pure module (routes/route.py,
filters/rules.py) loads without netlink, trio or pyroute2.
"""
