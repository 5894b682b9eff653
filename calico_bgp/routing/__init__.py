"""The routing core: pure decisions over values, no I/O (no trio, httpx, pyroute2, subprocess, speaker or
datastore client; tests/unit/test_import_rules.py enforces it). The caller passes `now`.

    topology.py          which BGP sessions this node must have (mesh, route reflectors, fabric peers)
    prefix.py            Prefix: family, network as an int, length (parsed, printed, ordered, contained)
    attributes.py        PathAttributes: a path's BGP attributes, from parse to the RIB to the command
    path.py              the RIB's values: Peer, LocalSpeaker, Path, Selection
    decision.py          best path and ECMP set (RFC 4271 9.1.2), loop checks
    rib.py               Adj-RIB-In per peer (accepted, rejected), the selection per prefix
    reflection.py        what a route reflector sends on (RFC 4456)
    bgpfilter.py         import and export policy (BGPFilter rules over safe defaults)
    intake.py            received UPDATEs on their way into the RIB (RFC 7606, damping, next hops)
    malformed.py         RFC 7606: what a malformed UPDATE does to the routes it carries
    martians.py          prefixes and next hops never installed
    nexthop.py           IPv6 global + link-local next hops, which one a route is installed via
    origin.py            origin validation from IPAM
    damping.py           route flap damping (RFC 2439)
    graceful_restart.py  which peers' routes are kept stale, and until when (RFC 4724)
    backoff.py           peers held idle after their sessions kept failing (RFC 4271 IdleHoldTime)
    desired.py           what this node announces and programs, from the cluster and the RIB
    max_prefixes.py      a peer's maxPrefixes limit: when to act, once per limit
    session_down.py      what a peer's routes become when its session drops (RFC 4724 helper)
    route_refresh.py     when to ask a peer to resend after an import-policy change (RFC 2918)
    bfd.py               the BFD sessions this node runs (BFDConfiguration, failureDetectionMode, links)
"""
