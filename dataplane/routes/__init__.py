"""Our routes in the kernel: one table, one protocol number.

    route.py       the Route value and the pure plan: desired vs actual -> adds / replaces / deletes
    dump.py        reading our table+protocol routes and the links
    events.py      route and link events (IPv4 + IPv6)
    protocol.py    our protocol number and its name for iproute2
    programmer.py  RouteProgrammer: reconcile, watch, restart continuity, counters
"""
