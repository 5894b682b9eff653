"""A workload's network: a veth into its namespace, routed, not bridged (Calico's CNI dataplane).

    plan.py     what the wiring is (names, sysctls, routes) and CHECK's verdict, decided without I/O
    codec.py    the link and address messages, built by hand
    wiring.py   attach / detach / inspect through netlink in the host's and the container's namespaces
"""
