"""The node agent: wiring the edges (etcd, the speaker, the kernel) to the routing core.

    node.py            NodeAgent: builds the parts and runs them in one trio nursery
    state.py           AgentState: what the agent knows, shared by its jobs
    control.py         the control loop: cluster view -> sessions, neighbours, import policy, exports
    session_events.py  speaker events -> intake, damping, RIB, reflection; session up/down, holds
    upkeep.py          timed jobs: grace, damping releases, stale sweeps, repairs, memory, IPAM, filters
    reflection.py      as a route reflector, RIB changes re-announced to iBGP neighbours
    kernel_writer.py   the path from RIB selections to the route programmer, in coalesced batches
    neighbors.py       sessions -> the speaker's neighbours, passwords resolved (pure but one read)
    throttle.py        events of a kind at most N per window, then one summary (pure)
    memory.py          when memory is given back after a large table left (pure), and how
    bulk_gc.py         the cyclic collector held off while a large UPDATE or kernel batch is applied
    snapshot.py        the agent's state as values; the metrics sample and origin news of one (pure)
    sampling.py        snapshots taken from the live state, in the agent's thread
    status.py          the status/<node> document (built from a snapshot by a pure function) and how the CLI reads it
    publisher.py       status/<node> in etcd under a lease, rate-limited
    policy.py          PolicyFilter resources -> the FilterSet this node enforces, and its reconciler
    autodetect.py      the node's BGP address, found the way calico/node does it
"""
