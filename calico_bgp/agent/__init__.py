"""The node agent: wiring the edges (etcd, the speaker, the kernel) to the routing core.

    node.py           Agent: one trio nursery; moves values between the pure modules and the edges
    kernel_writer.py  the path from RIB selections to the route programmer, in coalesced batches
    status.py         the status/<node> document (built by a pure function) and how the CLI reads it
    publisher.py      status/<node> in etcd under a lease, rate-limited
    policy.py         PolicyFilter resources -> the FilterSet this node enforces, and its reconciler
    autodetect.py     the node's BGP address, found the way calico/node does it
"""
