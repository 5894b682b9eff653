"""GTSM on connections a peer opens, per connection as BIRD does it (a patch exabgp_run applies).

ExaBGP puts a neighbour's `incoming-ttl` (IP_MINTTL) on the listening socket, which is shared by
every neighbour on that address and port: one session with GTSM then made the kernel drop the SYNs
of every other peer dialling that address with an ordinary TTL (a node-to-node mesh beside a
ttlSecurity BGPPeer), and the minimum stayed after the GTSM neighbour was removed. Patched, the
listening socket carries no minimum; once a connection is matched to its neighbour, that
connection gets the neighbour's minimum along with the TTL it sends with, as BIRD's
bgp_incoming_connection does (proto/bgp/bgp.c: sk_set_ttl 255, sk_set_min_ttl 256 - hops on the
accepted socket). Connections we open are unchanged: ExaBGP already sets both on them.

Imports under Python 3.9 (exabgp_run's rule).
"""
from __future__ import annotations


def patch() -> None:
    from exabgp.logger import log
    from exabgp.reactor import listener as listener_module
    from exabgp.reactor.network.error import NetworkError
    from exabgp.reactor.network.tcp import set_minimum_ttl

    listen = listener_module.Listener._listen
    set_sending = listener_module.set_accepted_ttl

    def _listen(self, local_ip, peer_ip, local_port, use_md5, md5_base64, ttl_in):  # type: ignore[no-untyped-def]
        return listen(self, local_ip, peer_ip, local_port, use_md5, md5_base64, None)

    def set_accepted_ttl(connection, neighbor):  # type: ignore[no-untyped-def]
        set_sending(connection, neighbor)
        minimum = neighbor["incoming-ttl"]
        if minimum and connection.io is not None:
            try:
                set_minimum_ttl(connection.io, connection.afi, connection.peer, minimum)
            except NetworkError as exc:  # Linux has IP_MINTTL and IPV6_MINHOPCOUNT: not expected there
                log.error(lambda exc=exc: f"GTSM not applied to {connection.name()}: {exc}", "network")

    listener_module.Listener._listen = _listen  # type: ignore[method-assign]
    listener_module.set_accepted_ttl = set_accepted_ttl  # type: ignore[attr-defined]
