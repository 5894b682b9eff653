"""Our routes in the kernel: one table, one protocol number.

    route.py       the Route value and the pure plan: desired vs actual -> adds / replaces / deletes
    kernel.py      RouteKey and KernelRoute: a route as the kernel keys and reports it (no attrs)
    dump.py        reading our table+protocol routes and the links
    events.py      route and link events (IPv4 + IPv6)
    protocol.py    our protocol number and its name for iproute2
    programmer.py  RouteProgrammer: reconcile, watch, restart continuity, counters
    desired_index.py  the desired routes by kernel key, with their dump signatures
    changes.py     the netlink operations a change is made of, and what it did (pure)
    failures.py    refused and unbuildable routes, the retry back-off, unreachable next hops
    watcher.py     route and link events that show drift wake a reconcile; the resync loop
"""
